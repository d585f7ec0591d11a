"""Small random-weight models with heads, built offline (no model hub): classifiers, a CrossEncoder, a masked LM.

``build_classifier(family, folder, num_labels=...)`` writes what a user downloads for a fine-tuned classifier
(``*ForSequenceClassification``: config.json with id2label, model.safetensors, the family's tokenizer); BERT's
tokenizer is a WordPiece over the packaged model's vocabulary, the other families' are trained offline by
tests/family_models.py. ``build_cross_encoder(folder)`` saves a BERT classifier as sentence-transformers'
``CrossEncoder`` saves it; ``build_masked_lm(folder)`` a ``BertForMaskedLM`` (SPLADE's architecture). Every parameter
is perturbed, so each tensor's mapping matters. ``EXPORTS`` are the models served from one repository by the heads'
tests and the docs' examples (tests/conftest.py ``head_models``, ``head_exports``, ``heads_served``). A module of its
own, so the exporter's, the bridge's and the docs' tests share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tiny_models import perturbed

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 37
POSITIONS = 64  # tokens every tiny model reads (BERT's 64 positions; RoBERTa-style 66 rows, from padding_idx + 1)
NLI_LABELS = {0: "contradiction", 1: "entailment", 2: "neutral"}
SPLADE_BIAS_SHIFT = 0.8


def _perturbed(model, seed: int):
    import torch

    torch.manual_seed(seed)
    return perturbed(model).eval()


def bert_tokenizer(folder: Path):
    """BERT's fast tokenizer over the packaged model's vocabulary, limited to the tiny models' positions."""
    import transformers

    from bert_exporter.options import packaged_model_dir

    lines = (packaged_model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    # transformers 5 takes the vocabulary itself (``vocab``); a ``vocab_file`` argument would be silently ignored
    tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(lines)}, do_lower_case=True,
                                               model_max_length=POSITIONS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_classifier(family: str, folder: Path, *, num_labels: int, pooling: str = "cls", seed: int = 24) -> Path:
    """A ``*ForSequenceClassification`` of ``family`` ("bert", "modernbert" or one of family_models.FAMILIES) with
    ``num_labels``; ModernBERT's with its ``classifier_pooling`` ``pooling`` ("cls" or "mean") and local layers that
    see 8 tokens on either side, far fewer than the 64 tokens it reads."""
    import transformers

    labels = {"id2label": NLI_LABELS, "label2id": {v: k for k, v in NLI_LABELS.items()}} if num_labels == 3 else {}
    folder.mkdir(parents=True, exist_ok=True)
    if family == "modernbert":
        from rotary_models import FAMILIES as ROTARY_FAMILIES, model_config, train_tokenizer

        tokenizer = train_tokenizer(ROTARY_FAMILIES[family])
        tokenizer.model_max_length = POSITIONS
        tokenizer.save_pretrained(folder)
        config = model_config(ROTARY_FAMILIES[family], tokenizer)
        config.update({"num_labels": num_labels, "local_attention": 16, "classifier_pooling": pooling,
                       "classifier_bias": pooling == "mean", "norm_bias": pooling == "mean", **labels})
    elif family == "bert":
        tokenizer = bert_tokenizer(folder)
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                         num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                                         max_position_embeddings=POSITIONS, num_labels=num_labels, **labels)
    else:
        from family_models import FAMILIES, model_config, train_tokenizer

        tokenizer = train_tokenizer(FAMILIES[family])
        tokenizer.model_max_length = POSITIONS  # the tokens its position table holds, as a hub model's says
        tokenizer.save_pretrained(folder)
        config = model_config(FAMILIES[family], len(tokenizer), tokenizer.pad_token_id)
        config.num_labels = num_labels
        for key, value in labels.items():
            setattr(config, key, value)
    model = _perturbed(transformers.AutoModelForSequenceClassification.from_config(config), seed)
    model.save_pretrained(folder)
    return folder


def build_cross_encoder(folder: Path, *, seed: int = 25) -> Path:
    """A one-label BERT classifier loaded and saved by sentence-transformers' CrossEncoder (its default activation,
    sigmoid, recorded in config_sentence_transformers.json)."""
    from sentence_transformers import CrossEncoder

    source = build_classifier("bert", folder.parent / f"{folder.name}-source", num_labels=1, seed=seed)
    CrossEncoder(str(source), device="cpu").save(str(folder))
    return folder


def build_masked_lm(folder: Path, *, seed: int = 26) -> Path:
    """A ``BertForMaskedLM`` (its decoder tied to the word embeddings, as transformers saves it). Its output bias is
    lowered so that, like a trained SPLADE model's, most of the vocabulary scores nothing for a text."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = bert_tokenizer(folder)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                                     max_position_embeddings=POSITIONS)
    model = _perturbed(transformers.BertForMaskedLM(config), seed)
    with torch.no_grad():
        model.cls.predictions.bias.sub_(SPLADE_BIAS_SHIFT)
    model.save_pretrained(folder)
    return folder


def splade_vectors(folder: Path, texts: list[str], max_length: int = POSITIONS):
    """The SPLADE definition on transformers' own model: max over the real tokens of log(1 + relu(MLM logits))."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    weights = torch.log(1 + torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
    return weights.max(dim=1).values.numpy()


def classifier_logits(folder: Path, inputs: list, max_length: int = POSITIONS):
    """transformers' logits for texts or (text, text) pairs, tokenized by the model's own tokenizer (pairs truncated
    longest-first, as transformers and sentence-transformers do)."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    if isinstance(inputs[0], (tuple, list)):
        batch = tokenizer([a for a, _ in inputs], [b for _, b in inputs], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
    else:
        batch = tokenizer(inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


class HeadModels:
    """The folders above, each built on first use and then reused (tests/conftest.py ``head_models``)."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def _once(self, key: str, build) -> Path:
        if key not in self._built:
            self._built[key] = build(self.root / key)
        return self._built[key]

    def classifier(self, family: str, num_labels: int, pooling: str = "cls") -> Path:
        key = f"{family}-{num_labels}" + ("" if pooling == "cls" else f"-{pooling}")
        return self._once(key, lambda folder: build_classifier(family, folder, num_labels=num_labels,
                                                               pooling=pooling))

    def cross_encoder(self) -> Path:
        return self._once("cross-encoder", build_cross_encoder)

    def masked_lm(self) -> Path:
        return self._once("masked-lm", build_masked_lm)


# bert-export of each served head model: export name -> (which tiny model, flags). In name order, as --model-repository
# serves them: the first, bert-reranker, is the default (ZeroMQ). docs/HTTP.md's examples use these names.
EXPORTS = {
    "bert-reranker": ("classifier bert 1", []),  # saved by transformers: its pipeline's sigmoid
    "encoder": ("classifier bert 3", ["-pooling_strategy", "REDUCE_MEAN"]),  # a classifier's encoder: it embeds
    "minilm-reranker": ("cross-encoder", []),  # saved by sentence-transformers' CrossEncoder
    "modernbert-mean-reranker": ("classifier modernbert 1 mean", []),  # the mean of the tokens, biases in its head
    "modernbert-nli": ("classifier modernbert 3 mean", []),
    "modernbert-reranker": ("classifier modernbert 1", []),  # its first token
    "nli": ("classifier bert 3", []),
    "splade": ("masked-lm", ["-pooling_strategy", "SPLADE"]),
    "xlmr-nli": ("classifier xlm-roberta 3", []),  # SentencePiece, <s> a </s></s> b </s>, no token types
    "xlmr-reranker": ("classifier xlm-roberta 1", []),
}


@dataclass
class HeadExports:
    """EXPORTS in one repository, served by one ``bert-serving-triton`` at ``triton_url``."""

    repository: Path
    triton_url: str
    sources: dict = field(default_factory=dict)  # export name -> the source folder (the oracle's model)

    def folder(self, name: str) -> Path:
        return self.repository / name


def source_of(models: HeadModels, name: str) -> Path:
    kind, *args = EXPORTS[name][0].split()
    if kind == "classifier":
        return models.classifier(args[0], int(args[1]), *args[2:])
    return models.cross_encoder() if kind == "cross-encoder" else models.masked_lm()
