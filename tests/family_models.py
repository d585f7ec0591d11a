"""Small random-weight models of every non-BERT family, with tokenizers trained here, offline (no model hub).

For each family (roberta, xlm-roberta, camembert, distilbert, mpnet) ``build_model(family, folder)`` writes what a
user downloads from the hub: ``config.json`` and ``model.safetensors`` (transformers' ``from_config`` with every
parameter perturbed, so each tensor's mapping matters), and the family's own fast tokenizer (``tokenizer.json``,
``tokenizer_config.json``) as its transformers class saves it. The tokenizer is trained by ``tokenizers`` on the
multilingual CORPUS below the way the family's real one was made -- byte-level BPE for RoBERTa, a SentencePiece-style
Unigram for XLM-R and CamemBERT, WordPiece for DistilBERT (BERT's specials) and MPNet (``<s>``/``</s>``) -- and then
handed to the transformers class, so that ``tokenizer.json`` is exactly the pipeline transformers runs.
``build_sentence_transformers(family, model_folder, folder)`` adds the sentence-transformers pipeline
(Transformer -> Pooling -> Normalize), saved by sentence-transformers itself.

A module of its own (not a conftest), so the exporter's and the bridge's tests can import it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tiny_models import perturbed

# The tokenizers learn their pieces from these; HELD_OUT shares the languages but not the sentences (unseen words,
# and characters the Unigram models never saw, which become <unk>).
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Shares fell sharply on Tuesday after the company cut its revenue forecast.",
    "She played the violin at the concert, and the audience asked for two encores.",
    "Please return the signed contract by Friday so that we can schedule the installation.",
    "Protein folding is determined by the sequence of amino acids and the surrounding solvent.",
    "Der Zug nach Berlin hat heute leider zwanzig Minuten Verspätung.",
    "Die Universität Heidelberg wurde 1386 gegründet und ist die älteste Hochschule Deutschlands.",
    "Ich möchte gerne einen Kaffee mit Milch und ohne Zucker bestellen.",
    "La réunion de demain est reportée à la semaine prochaine pour des raisons d'organisation.",
    "Le musée du Louvre est le plus grand musée d'art du monde.",
    "Nous avons mangé une excellente crème brûlée après le dîner.",
    "El pronóstico del tiempo anuncia lluvias intensas durante todo el fin de semana.",
    "¿Dónde está la estación de tren más cercana, por favor?",
    "Il museo resterà chiuso per lavori di restauro fino alla fine di marzo.",
    "A cidade de São Paulo é a maior cidade do Brasil.",
    "Москва является крупнейшим городом России по численности населения.",
    "Я люблю читать книги вечером у окна.",
    "Ο καιρός σήμερα είναι ηλιόλουστος και ζεστός.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "東京は日本の首都であり、世界でも有数の大都市です。",
    "私は毎朝コーヒーを飲みます。",
    "北京的秋天天气晴朗，非常适合外出旅游。",
    "我们明天去公园散步吧。",
    "서울의 지하철은 깨끗하고 편리하며 요금도 저렴합니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "यह पुस्तक भारतीय इतिहास के बारे में बहुत रोचक जानकारी देती है।",
    "İstanbul, Türkiye'nin en kalabalık şehridir.",
    "Warszawa jest stolicą Polski i największym miastem w kraju.",
    "Kedvenc ételem a gulyásleves friss kenyérrel.",
    "I ❤️ emoji 🎉 and numbers like 3.14159, 42 and 2024!",
    "Quantization maps floating point weights to eight bit integers.",
    "Sentence embeddings place similar meanings close together in vector space.",
]
HELD_OUT = [
    "A completely different sentence about astronomy and distant galaxies.",
    "Wir treffen uns morgen früh am Hauptbahnhof.",
    "Les enfants jouent dans le jardin sous le soleil.",
    "Mañana vamos a visitar a nuestros abuelos en Sevilla.",
    "Петербург стоит на берегу Невы.",
    "Το πρωινό ήταν νόστιμο και χορταστικό.",
    "京都には古いお寺がたくさんあります。",
    "上海是中国最大的城市之一。",
    "부산은 아름다운 해변으로 유명합니다.",
    "الطقس جميل جدا في الربيع.",
    "मुझे संगीत सुनना पसंद है।",
    "ok",
    "Zürich, Kraków and Reykjavík welcome travellers all year round 🚆✨.",
    "Xylophones quietly vex jumbo wizards; unseen words split into many pieces.",
]

TINY_LAYERS, TINY_HIDDEN, TINY_HEADS, TINY_INTERMEDIATE = 3, 48, 4, 96
VOCAB_SIZE = 1200  # what the trainers aim for; small corpora give fewer
# RoBERTa-style models number positions from pad_token_id + 1: 66 positions hold 64 tokens (XLM-R's 514 hold 512).
POSITIONS = 66


@dataclass(frozen=True)
class Family:
    """How one family's tiny model and tokenizer are made, and what sentence-transformers pipeline it gets."""

    model_type: str
    tokenizer_kind: str  # "bpe", "unigram" or "wordpiece": how the tokenizer is trained
    special_tokens: dict  # cls, sep, pad, unk, mask as the family's tokenizer names them
    pair_separators: int  # separators between a pair's parts: 1 ([SEP]), 2 (</s></s>)
    st_pooling: str = "mean"  # the sentence-transformers folder's Pooling mode
    st_do_lower_case: bool = False  # sentence_bert_config.json's do_lower_case (a Lowercase before the tokenizer)
    seed: int = 0
    leading_tokens: tuple = field(default=())  # vocabulary entries before the trained ones, in id order
    trailing_tokens: tuple = field(default=())  # entries after them (the <mask> of SentencePiece-style models)


ROBERTA_SPECIALS = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
FAMILIES = {
    "roberta": Family("roberta", "bpe", ROBERTA_SPECIALS, 2, st_pooling="cls", seed=11,
                      leading_tokens=("<s>", "<pad>", "</s>", "<unk>"), trailing_tokens=("<mask>",)),
    "xlm-roberta": Family("xlm-roberta", "unigram", ROBERTA_SPECIALS, 2, seed=12,
                          leading_tokens=("<s>", "<pad>", "</s>", "<unk>"), trailing_tokens=("<mask>",)),
    # CamemBERT's vocabulary starts with unused copies of the specials, the real <s> and </s> come after <unk>.
    "camembert": Family("camembert", "unigram", ROBERTA_SPECIALS, 2, st_do_lower_case=True, seed=13,
                        leading_tokens=("<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>"),
                        trailing_tokens=("<mask>",)),
    "distilbert": Family("distilbert", "wordpiece",
                         {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}, 1,
                         st_pooling="cls", seed=14,
                         leading_tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")),
    # MPNet: BERT's WordPiece vocabulary behind <s> <pad> </s> <unk>, [UNK] as the unknown token, <mask> last.
    "mpnet": Family("mpnet", "wordpiece",
                    {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "[UNK]", "mask": "<mask>"}, 2, seed=15,
                    leading_tokens=("<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
                    trailing_tokens=("<mask>",)),
}


# --- tokenizers --------------------------------------------------------------------------------------------------

def train_tokenizer(family: Family):
    """The family's transformers tokenizer class, holding a vocabulary trained on CORPUS."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = list(family.leading_tokens)
    if family.tokenizer_kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif family.tokenizer_kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                           pre_tokenizers.Metaspace(prepend_scheme="always")])
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=family.special_tokens["unk"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    named = {"bos_token": family.special_tokens["cls"], "eos_token": family.special_tokens["sep"],
             **{f"{name}_token": token for name, token in family.special_tokens.items()}}
    if family.tokenizer_kind == "unigram":
        vocab = [tuple(piece) for piece in model["vocab"]] + [(token, 0.0) for token in family.trailing_tokens]
        if family.model_type == "camembert":
            return transformers.CamembertTokenizer(vocab=vocab, **named)
        return transformers.XLMRobertaTokenizer(vocab=vocab, **named)
    vocab = dict(model["vocab"])
    for token in family.trailing_tokens:
        vocab[token] = len(vocab)
    if family.tokenizer_kind == "bpe":
        merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]]
        return transformers.RobertaTokenizer(vocab=vocab, merges=merges, **named)
    named.pop("bos_token"), named.pop("eos_token")
    if family.model_type == "mpnet":
        return transformers.MPNetTokenizer(vocab=vocab, **named)
    return transformers.DistilBertTokenizer(vocab=vocab, **named)


# --- models ------------------------------------------------------------------------------------------------------

def model_config(family: Family, vocab_size: int, pad_token_id: int):
    import transformers

    if family.model_type == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=vocab_size, dim=TINY_HIDDEN, n_layers=TINY_LAYERS, n_heads=TINY_HEADS,
            hidden_dim=TINY_INTERMEDIATE, max_position_embeddings=POSITIONS - 2, pad_token_id=pad_token_id)
    common = dict(vocab_size=vocab_size, hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                  num_attention_heads=TINY_HEADS, intermediate_size=TINY_INTERMEDIATE,
                  max_position_embeddings=POSITIONS, pad_token_id=pad_token_id, bos_token_id=0, eos_token_id=2)
    if family.model_type == "mpnet":
        return transformers.MPNetConfig(relative_attention_num_buckets=32, **common)
    classes = {"roberta": transformers.RobertaConfig, "xlm-roberta": transformers.XLMRobertaConfig,
               "camembert": transformers.CamembertConfig}
    return classes[family.model_type](type_vocab_size=1, **common)


def build_model(model_type: str, folder: Path) -> Path:
    """The family's tiny model and tokenizer, saved into ``folder`` as a hub download looks."""
    import torch
    import transformers

    family = FAMILIES[model_type]
    tokenizer = train_tokenizer(family)
    # The embedding table covers the whole vocabulary, added tokens (the trailing <mask>) included.
    config = model_config(family, len(tokenizer), tokenizer.pad_token_id)
    torch.manual_seed(family.seed)
    model = perturbed(transformers.AutoModel.from_config(config).eval())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_sentence_transformers(model_type: str, model_folder: Path, folder: Path, *,
                                max_seq_length: int = 40) -> Path:
    """Transformer (the model at the folder's root) -> Pooling -> Normalize, saved by sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    family = FAMILIES[model_type]
    transformer = Transformer(str(model_folder), max_seq_length=max_seq_length,
                              do_lower_case=family.st_do_lower_case)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=family.st_pooling)
    SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(folder))
    return folder
