"""Which head a model folder has, read from its own files; the head's settings and its weights (heads.py).

- Classification: config.json's ``architectures`` name a ``*ForSequenceClassification`` (what transformers and
  sentence-transformers' ``CrossEncoder`` save). Labels are ``id2label`` in id order. The activation that turns the
  logits into scores is the model's own: a CrossEncoder's ``activation_fn`` (config_sentence_transformers.json;
  sentence-transformers 4 and 5 kept it in config.json's ``sentence_transformers``, earlier versions in
  ``sbert_ce_default_activation_function``), else CrossEncoder's default (sigmoid for one label, identity for more);
  for a folder without a CrossEncoder's files, what transformers' text-classification pipeline applies (nothing for
  regression, sigmoid for one label or multi-label problems, softmax otherwise).
- SPLADE: ``-pooling_strategy SPLADE`` on a folder with a masked-language-model head (``*ForMaskedLM``).

The heads are found by their weights' names, whatever the family: BERT's (NomicBert's, GTE's) pooler + classifier
and cls.predictions, RoBERTa's (XLM-R's, CamemBERT's, MPNet's) classifier.dense/out_proj and lm_head, DistilBERT's
pre_classifier + classifier and vocab_transform/vocab_layer_norm/vocab_projector, ModernBERT's head.dense, head.norm
and classifier (over the first token or the tokens' mean, as its config's ``classifier_pooling`` says). A head
exports the model's own semantics: it reads the last layer, truncates at the model's own length and tokenizes with
the model's own tokenizer.

Only the standard library is imported at module level (bert-export's --help).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .encoder_config import EncoderConfig, read_json_config
from .errors import OptionError, SourceError
from .manifest import CLASSIFY, EMBED, RERANK, SPARSE, PoolingStrategy

CLASSIFICATION, SPLADE = "classification", "splade"  # the kinds of head (heads.py writes them)
CROSS_ENCODER_CONFIG = "config_sentence_transformers.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
HF_CONFIG = "config.json"
LAST_LAYER = -1
# A CrossEncoder's activation_fn as sentence-transformers saves it (the torch class) -> the bridge's name for it.
CROSS_ENCODER_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.modules.activation.Tanh": "tanh",
}
# tokenizer_config.json's model_max_length when a tokenizer has no limit of its own (transformers' VERY_LARGE_INTEGER)
NO_LIMIT = 10 ** 9
# Flags that decide what the head already decides: refused when given with a head.
HEAD_DECIDES = ("pooling_layer", "cased_tokenization", "mask_cls_sep")


@dataclass(frozen=True)
class _Classifier:
    """Where a classification head's layers are (HF module names) and the activation after the dense one; ModernBERT's
    reads its activation, pooling and norm from config.json (``classifier_*``, ``norm_eps``)."""

    dense: tuple[str, ...]  # candidates, the first present wins
    out: str
    activation: Optional[str]  # None: config.json's classifier_activation
    norm: Optional[str] = None  # a LayerNorm after the activation


@dataclass(frozen=True)
class _MaskedLM:
    """Where a masked-language-model head's layers are; ``activation`` None: the encoder's hidden_act."""

    transform: str
    layer_norm: str
    decoder: str
    bias: tuple[str, ...]
    activation: Optional[str]
    layer_norm_eps: Optional[float]  # None: the encoder's


CLASSIFIERS = {
    "dense_out_proj": _Classifier(("classifier.dense",), "classifier.out_proj", "tanh"),  # RoBERTa, XLM-R, MPNet
    "pre_classifier": _Classifier(("pre_classifier",), "classifier", "relu"),  # DistilBERT
    "pooler": _Classifier(("bert.pooler.dense", "pooler.dense", "nomic_bert.pooler.dense", "gte.pooler.dense",
                           "new.pooler.dense"), "classifier", "tanh"),  # BERT, NomicBert, GTE
    "modernbert_head": _Classifier(("head.dense",), "classifier", None, norm="head.norm"),  # ModernBERT
}
# ModernBERT's classifier_pooling -> what the head reads of the last hidden state (after the final norm).
CLASSIFIER_POOLINGS = {"cls": "first", "mean": "mean"}
MASKED_LMS = {
    "cls_predictions": _MaskedLM("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                                 "cls.predictions.decoder", ("cls.predictions.bias", "cls.predictions.decoder.bias"),
                                 None, None),  # BERT
    "lm_head": _MaskedLM("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder",
                         ("lm_head.bias", "lm_head.decoder.bias"), "gelu", None),  # RoBERTa, XLM-R, MPNet
    "vocab_projector": _MaskedLM("vocab_transform", "vocab_layer_norm", "vocab_projector", ("vocab_projector.bias",),
                                 None, 1e-12),  # DistilBERT
}


def task_of(head: Optional[dict]) -> str:
    """rerank: one score per input (a pair, for a cross-encoder); classify: several labels; sparse: SPLADE."""
    if head is None:
        return EMBED
    if head["kind"] == SPLADE:
        return SPARSE
    return RERANK if len(head["labels"]) == 1 else CLASSIFY


def resolve_head(model_dir: Path, flags: dict, *, explicit: frozenset) -> dict:
    """bert-export's flags with the folder's head resolved (``flags["head"]``), or unchanged when it exports none.

    -pooling_strategy SPLADE asks for the MLM head; a classifier folder gets its classification head unless a pooling
    strategy is named (then its encoder is exported with that pooling, as from any folder; AUTO keeps the head: it
    is the model's own output). -max_seq_len overrides the model's own length; the flags a head decides are
    refused. The config is read only when a head is exported."""
    from .encoder_config import read_config
    from .source import config_path

    model_dir = Path(model_dir)
    weights_dir = Path(flags.get("tuned_model_dir") or model_dir)
    strategy = flags["pooling_strategy"]
    if strategy is PoolingStrategy.SPLADE:
        config = read_config(config_path(model_dir, flags["config_name"]))
        head = splade_head(model_dir, weights_dir, config)
    elif "pooling_strategy" in explicit and strategy != "AUTO":
        return flags
    elif is_classifier(model_dir):
        config = read_config(config_path(model_dir, flags["config_name"]))  # refuses a family bert-export lacks
        head = classification_head(model_dir, weights_dir)
    else:
        return flags
    given = [f"-{flag}" for flag in HEAD_DECIDES if flag in explicit]
    if given:
        raise OptionError(f"the {head['kind']} head decides {', '.join(given)} itself (the last layer, the model's "
                          f"own tokenizer, every token): drop {', '.join(given)}")
    pooling = (PoolingStrategy.SPLADE if head["kind"] == SPLADE else
               PoolingStrategy.REDUCE_MEAN if head["pooling"] == "mean" else PoolingStrategy.FIRST_TOKEN)
    return {**flags,
            "pooling_strategy": pooling,  # what the head reads of the last layer, as the manifest says it
            "pooling_layer": (LAST_LAYER,),
            "max_seq_len": flags["max_seq_len"] if "max_seq_len" in explicit else model_max_length(model_dir, config),
            "cased_tokenization": not tokenizer_lowercases(model_dir, config.model_type),
            "head": head}


def is_classifier(model_dir: Path) -> bool:
    """config.json names a ``*ForSequenceClassification``."""
    data = _hf_config(model_dir)
    return data is not None and any(str(a).endswith("ForSequenceClassification")
                                    for a in data.get("architectures") or ())


def classification_head(model_dir: Path, weights_dir: Path) -> dict:
    """The head of a ``*ForSequenceClassification`` folder (is_classifier)."""
    data = _hf_config(model_dir)
    names = tensor_names(weights_dir)
    layout = next((name for name, c in CLASSIFIERS.items()
                   if f"{c.out}.weight" in names and any(f"{d}.weight" in names for d in c.dense)), None)
    if layout is None:
        raise SourceError(f"{weights_dir} is a {data['architectures'][0]} without a classification head bert-export "
                          f"knows (classifier.dense + classifier.out_proj, pre_classifier + classifier, a pooler + "
                          f"classifier, or ModernBERT's head.dense + head.norm + classifier)")
    classifier = CLASSIFIERS[layout]
    num_labels = tensor_shape(weights_dir, f"{classifier.out}.weight")[0]
    activation, source = _score_activation(model_dir, data, num_labels)
    head = {"kind": CLASSIFICATION, "layout": layout, "activation": classifier.activation, "pooling": "first",
            "labels": _labels(data, num_labels), "score_activation": activation, "source": source,
            "width": num_labels}
    if classifier.activation is None:  # ModernBERT: pooling, activation and norm as its config.json says
        head.update(_configured_head(data, Path(model_dir) / HF_CONFIG))
    return head


def _configured_head(data: dict, path: Path) -> dict:
    from .rotary_config import activation

    pooling = data.get("classifier_pooling", "cls")
    if pooling not in CLASSIFIER_POOLINGS:
        raise SourceError(f"{path}: classifier_pooling {pooling!r} is not supported (supported: "
                          f"{', '.join(CLASSIFIER_POOLINGS)})")
    return {"pooling": CLASSIFIER_POOLINGS[pooling],
            "activation": activation(data.get("classifier_activation", "gelu"), path),
            "layer_norm_eps": float(data.get("norm_eps", 1e-5))}


def splade_head(model_dir: Path, weights_dir: Path, config: EncoderConfig) -> dict:
    """The MLM head SPLADE needs; SourceError in one line for a folder without one."""
    data = _hf_config(model_dir)
    architectures = ", ".join(map(str, (data or {}).get("architectures") or ())) or "no architectures"
    names = tensor_names(weights_dir) if data is not None else set()
    layout = next((name for name, lm in MASKED_LMS.items() if f"{lm.transform}.weight" in names), None)
    if layout is None:
        raise SourceError(f"-pooling_strategy SPLADE needs a masked-language-model head (a *ForMaskedLM folder, as "
                          f"transformers saves it); {weights_dir} has none ({architectures})")
    lm = MASKED_LMS[layout]
    return {"kind": SPLADE, "layout": layout, "activation": lm.activation or config.hidden_act,
            "layer_norm_eps": lm.layer_norm_eps or config.layer_norm_eps, "width": config.vocab_size}


def head_weights(weights_dir: Path, head: dict, encoder: dict, config: EncoderConfig) -> dict:
    """The head's tensors under heads.py's neutral names, linear kernels ``[in, out]``, shapes checked."""
    import numpy as np

    hidden = config.hidden_size
    if head["kind"] == CLASSIFICATION:
        layout = CLASSIFIERS[head["layout"]]
        names = tensor_names(weights_dir)
        dense = next(d for d in layout.dense if f"{d}.weight" in names)
        wanted = [f"{dense}.weight", f"{layout.out}.weight", f"{layout.out}.bias"]
        biases = [f"{dense}.bias"]
        if layout.norm:
            wanted.append(f"{layout.norm}.weight")
            biases.append(f"{layout.norm}.bias")
        # ModernBERT's dense and norm may have no bias (classifier_bias, norm_bias): zeros, the same arithmetic
        tensors = read_tensors(weights_dir, wanted + [b for b in biases if b in names or not layout.norm])
        for bias in biases:
            tensors.setdefault(bias, np.zeros(hidden, np.float32))
        shapes = {f"{dense}.weight": (hidden, hidden), f"{layout.out}.weight": (head["width"], hidden)}
        weights = {"head/dense/kernel": tensors[f"{dense}.weight"], "head/dense/bias": tensors[f"{dense}.bias"],
                   "head/out/kernel": tensors[f"{layout.out}.weight"], "head/out/bias": tensors[f"{layout.out}.bias"]}
        if layout.norm:
            shapes[f"{layout.norm}.weight"] = (hidden,)
            weights.update({"head/norm/gamma": tensors[f"{layout.norm}.weight"],
                            "head/norm/beta": tensors[f"{layout.norm}.bias"]})
    else:
        lm = MASKED_LMS[head["layout"]]
        names = tensor_names(weights_dir)
        bias = next((b for b in lm.bias if b in names), lm.bias[0])
        norm = [f"{lm.layer_norm}.{w}" for w in ("weight", "bias", "gamma", "beta") if f"{lm.layer_norm}.{w}" in names]
        wanted = [f"{lm.transform}.weight", f"{lm.transform}.bias", *norm, bias]
        tied = f"{lm.decoder}.weight" not in names  # saved once, as the word embeddings
        tensors = read_tensors(weights_dir, wanted + ([] if tied else [f"{lm.decoder}.weight"]))
        decoder = encoder["embeddings/word_embeddings"] if tied else tensors[f"{lm.decoder}.weight"]
        gamma, beta = (tensors[name] for name in norm[:2])
        shapes = {f"{lm.transform}.weight": (hidden, hidden), "decoder": (config.vocab_size, hidden)}
        tensors["decoder"] = decoder
        weights = {"head/transform/kernel": tensors[f"{lm.transform}.weight"],
                   "head/transform/bias": tensors[f"{lm.transform}.bias"],
                   "head/layer_norm/gamma": gamma, "head/layer_norm/beta": beta,
                   "head/decoder/kernel": decoder, "head/decoder/bias": tensors[bias]}
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise SourceError(f"{weights_dir}: {name} has shape {tuple(tensors[name].shape)}, the config implies "
                              f"{shape}")
    return {name: np.ascontiguousarray(np.asarray(array, np.float32).T if name.endswith("/kernel") else array,
                                       dtype=np.float32) for name, array in weights.items()}


def model_max_length(model_dir: Path, config: EncoderConfig) -> int:
    """The tokens the model reads, as sentence-transformers and transformers truncate: sentence_bert_config.json's
    max_seq_length, else the tokenizer's model_max_length, capped at the model's real limit."""
    model_dir = Path(model_dir)
    length = _json(model_dir / SENTENCE_BERT_CONFIG).get("max_seq_length")
    if length is None:
        length = _json(model_dir / TOKENIZER_CONFIG).get("model_max_length")
    if length is None or int(length) >= NO_LIMIT:
        return config.max_position_embeddings
    return min(int(length), config.max_position_embeddings)


def tokenizer_lowercases(model_dir: Path, model_type: str) -> bool:
    """The model's own tokenizer, as transformers runs it, lower-cases text (the export's do_lower_case)."""
    from .tokenizer_files import lowercases, model_tokenizer

    return lowercases(model_tokenizer(model_dir, model_type=model_type, lowercase_first=False).normalizer)


def _score_activation(model_dir: Path, data: dict, num_labels: int) -> tuple[str, str]:
    """(the activation making scores of the logits, whose convention it is)."""
    cross_encoder = _json(model_dir / CROSS_ENCODER_CONFIG)
    legacy = data.get("sentence_transformers") if isinstance(data.get("sentence_transformers"), dict) else {}
    if cross_encoder.get("model_type") == "CrossEncoder" or "activation_fn" in legacy \
            or data.get("sbert_ce_default_activation_function"):
        path = (cross_encoder.get("activation_fn") or legacy.get("activation_fn")
                or data.get("sbert_ce_default_activation_function"))
        if path is None:
            return ("sigmoid" if num_labels == 1 else "identity"), "sentence-transformers CrossEncoder"
        if path not in CROSS_ENCODER_ACTIVATIONS:
            raise SourceError(f"{model_dir}: the CrossEncoder's activation_fn {path} has no equivalent here "
                              f"(supported: {', '.join(p.rsplit('.', 1)[-1] for p in CROSS_ENCODER_ACTIVATIONS)})")
        return CROSS_ENCODER_ACTIVATIONS[path], "sentence-transformers CrossEncoder"
    problem = data.get("problem_type")
    if problem == "regression":
        return "identity", "transformers"
    if problem == "multi_label_classification" or num_labels == 1:
        return "sigmoid", "transformers"
    return "softmax", "transformers"


def _labels(data: dict, num_labels: int) -> list[str]:
    id2label = data.get("id2label") or {}
    try:
        labels = {int(index): str(label) for index, label in id2label.items()}
    except (TypeError, ValueError):
        labels = {}
    return [labels.get(i, f"LABEL_{i}") for i in range(num_labels)]


def _hf_config(model_dir: Path) -> Optional[dict]:
    path = Path(model_dir) / HF_CONFIG
    return read_json_config(path) if path.is_file() else None


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e
    return data if isinstance(data, dict) else {}


# --- reading a few tensors of a Hugging Face folder -----------------------------------------------------------------

def _shards(folder: Path) -> dict[str, Path]:
    """tensor name -> the safetensors file holding it; {} for a folder of pytorch_model.bin."""
    from .weights import SAFETENSORS_FILE, SAFETENSORS_INDEX

    folder = Path(folder)
    if (folder / SAFETENSORS_INDEX).is_file():
        weight_map = json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"]
        return {name: folder / shard for name, shard in weight_map.items()}
    if (folder / SAFETENSORS_FILE).is_file():
        from safetensors import safe_open

        with safe_open(str(folder / SAFETENSORS_FILE), framework="numpy") as f:
            return {name: folder / SAFETENSORS_FILE for name in f.keys()}
    return {}


def tensor_names(folder: Path) -> set[str]:
    shards = _shards(folder)
    if shards:
        return set(shards)
    return set(_torch_tensors(folder))


def tensor_shape(folder: Path, name: str) -> tuple[int, ...]:
    return tuple(read_tensors(folder, [name])[name].shape)


def read_tensors(folder: Path, names: list[str]) -> dict:
    """Only these tensors (safetensors reads them alone); SourceError naming the first one missing."""
    shards = _shards(folder)
    if shards:
        from safetensors import safe_open

        missing = [name for name in names if name not in shards]
        if missing:
            raise SourceError(f"{folder} lacks {missing[0]}")
        tensors = {}
        for name in names:
            with safe_open(str(shards[name]), framework="numpy") as f:
                tensors[name] = f.get_tensor(name)
        return tensors
    everything = _torch_tensors(folder)
    missing = [name for name in names if name not in everything]
    if missing:
        raise SourceError(f"{folder} lacks {missing[0]}")
    return {name: everything[name] for name in names}


def _torch_tensors(folder: Path) -> dict:
    from .weights import TORCH_FILE, _read_torch_bin

    path = Path(folder) / TORCH_FILE
    if not path.is_file():
        raise SourceError(f"no weights in {folder}: expected model.safetensors or {TORCH_FILE}")
    return _read_torch_bin(path)
