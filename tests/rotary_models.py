"""Small random-weight models of the rotary families (ModernBERT, NomicBert, GTE), with tokenizers trained here,
offline, on family_models.CORPUS (no model hub).

``build_model(family, folder)`` writes what a user downloads from the hub: ``config.json`` and ``model.safetensors``
(transformers' ``from_config`` with every parameter perturbed, so each tensor's mapping matters) and the family's
fast tokenizer as its transformers class saves it: ModernBERT a byte-level BPE with [CLS]/[SEP] (transformers runs
it as written, TokenizersBackend), NomicBert BERT's WordPiece, GTE the XLM-R SentencePiece of gte-multilingual.
Each model holds 4,096 positions, so inputs of 3,000 tokens fit; ModernBERT's local layers see 32 tokens on either
side (``local_attention`` 64), far less than the long inputs, so the window matters.
``build_sentence_transformers(family, model_folder, folder)`` adds Transformer -> Pooling -> Normalize.
``text_of_tokens(tokenizer, n)`` makes a text of at most (and about) ``n`` tokens from the corpus.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from family_models import CORPUS, HELD_OUT, VOCAB_SIZE
from tiny_models import perturbed

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 48, 3, 4, 64
POSITIONS = 4096
LOCAL_ATTENTION = 64  # ModernBERT: a local layer's token sees 32 tokens on either side
MAX_SEQ_LEN = 3072  # what the served exports take: the tests send inputs of up to 3,000 tokens
# What each family's plain export pools (the drop-in default for ModernBERT; others for variety).
POOLING = {"modernbert": ("REDUCE_MEAN", (-2,)), "nomic_bert": ("REDUCE_MEAN_MAX", (-1, -2)),
           "gte": ("FIRST_TOKEN", (-1,))}
BERT_SPECIALS = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}


@dataclass(frozen=True)
class RotaryFamily:
    model_type: str
    tokenizer_kind: str  # "bpe", "wordpiece" or "unigram"
    special_tokens: dict
    st_pooling: str  # the sentence-transformers folder's Pooling mode
    seed: int


FAMILIES = {
    "modernbert": RotaryFamily("modernbert", "bpe", BERT_SPECIALS, "mean", seed=21),
    "nomic_bert": RotaryFamily("nomic_bert", "wordpiece", BERT_SPECIALS, "mean", seed=22),
    "gte": RotaryFamily("gte", "unigram", ROBERTA_SPECIALS, "cls", seed=23),
}


def train_tokenizer(family: RotaryFamily):
    """The family's transformers tokenizer, its vocabulary trained on CORPUS."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    s = family.special_tokens
    if family.tokenizer_kind == "bpe":
        specials = [s["cls"], s["pad"], s["sep"], s["unk"], s["mask"]]
        tokenizer = Tokenizer(models.BPE(unk_token=s["unk"]))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        ids = {token: tokenizer.token_to_id(token) for token in (s["cls"], s["sep"])}
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{s['cls']} $A {s['sep']}", pair=f"{s['cls']} $A {s['sep']} $B {s['sep']}",
            special_tokens=list(ids.items()))
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, **{f"{name}_token": token for name, token in s.items()})
    if family.tokenizer_kind == "wordpiece":
        specials = [s["pad"], s["unk"], s["cls"], s["sep"], s["mask"]]
        tokenizer = Tokenizer(models.WordPiece(unk_token=s["unk"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False))
        import json

        vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
        return transformers.BertTokenizer(vocab=vocab, **{f"{name}_token": token for name, token in s.items()})
    specials = [s["cls"], s["pad"], s["sep"], s["unk"]]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Metaspace(prepend_scheme="always")])
    tokenizer.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, unk_token=s["unk"], show_progress=False))
    import json

    vocab = [tuple(piece) for piece in json.loads(tokenizer.to_str())["model"]["vocab"]] + [(s["mask"], 0.0)]
    return transformers.XLMRobertaTokenizer(vocab=vocab, bos_token=s["cls"], eos_token=s["sep"],
                                            **{f"{name}_token": token for name, token in s.items()})


def model_config(family: RotaryFamily, tokenizer):
    import transformers

    common = dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS,
                  pad_token_id=tokenizer.pad_token_id)
    if family.model_type == "modernbert":
        return transformers.ModernBertConfig(
            local_attention=LOCAL_ATTENTION, global_attn_every_n_layers=2, cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id, **common)
    if family.model_type == "nomic_bert":
        return transformers.NomicBertConfig(type_vocab_size=2, **common)
    return transformers.GteConfig(type_vocab_size=1, **common)


def build_model(model_type: str, folder: Path) -> Path:
    import torch
    import transformers

    family = FAMILIES[model_type]
    tokenizer = train_tokenizer(family)
    torch.manual_seed(family.seed)
    model = perturbed(transformers.AutoModel.from_config(model_config(family, tokenizer)).eval())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_sentence_transformers(model_type: str, model_folder: Path, folder: Path, *,
                                max_seq_length: int = 3072) -> Path:
    """Transformer (the model at the folder's root) -> Pooling -> Normalize, saved by sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(str(model_folder), max_seq_length=max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=FAMILIES[model_type].st_pooling)
    SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu").save(str(folder))
    return folder


def text_of_tokens(tokenizer, tokens: int) -> str:
    """The longest run of the corpus's words (in order, repeated) that the tokenizer makes at most ``tokens`` tokens
    of, special tokens included: a binary search over the number of words."""
    words = " ".join(HELD_OUT + CORPUS).split()

    def text(count: int) -> str:
        return " ".join(words[i % len(words)] for i in range(count))

    low, high = 1, tokens  # a word makes at least one token
    while low < high:
        middle = (low + high + 1) // 2
        if len(tokenizer(text(middle))["input_ids"]) <= tokens:
            low = middle
        else:
            high = middle - 1
    return text(low)
