"""``-pooling_strategy AUTO``: the settings a sentence-transformers folder implies, read from its own files.

sentence-transformers describes a model as a pipeline in ``modules.json``: a Transformer (the model at the folder's
root: a BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT or MPNet), a Pooling module (``1_Pooling/config.json``),
optionally Dense modules (a linear layer and an activation, e.g. ``2_Dense/``) and a Normalize module.
``SentenceTransformer(folder).encode`` pools the last encoder layer, truncates to ``sentence_bert_config.json``'s
``max_seq_length``, applies the Dense layers and L2-normalizes when a Normalize module comes last. This module maps
that pipeline onto the original's settings where an exact equivalent exists, and refuses the rest naming what it met
(one ``SourceError`` line).

Tokenization is the model's own: sentence-transformers runs the family's transformers 5 tokenizer (a
``BertTokenizer`` from the WordPiece vocabulary with a ``BertNormalizer`` configured by ``tokenizer_config.json``; the
SentencePiece and byte-level BPE tokenizers of the RoBERTa family, ...), and puts a ``Lowercase`` normalizer in front
when ``sentence_bert_config.json`` says ``do_lower_case``. The export carries exactly that tokenizer
(tokenizer_files.py), and the bridge runs it -- for BERT instead of its Python re-creation of the original's
BasicTokenizer, which disagrees with the Rust normalizer on a few characters (Greek final sigma, unassigned code
points). sentence-transformers 6 keeps ``max_seq_length`` as ``tokenizer_config.json``'s ``model_max_length``.

Only the standard library is imported at module level: ``tokenizers``, numpy and safetensors load where they are used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .encoder_config import EncoderConfig
from .errors import OptionError, SourceError
from .manifest import PoolingStrategy
from .tokenizer_files import TOKENIZER_FILE, lowercases, model_tokenizer, tokenizer_settings

AUTO = "AUTO"
MODULES_FILE = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
POOLING_CONFIG = "config.json"
LAST_LAYER = -1
# Pooling modes with an exact equivalent among the original's strategies (same formula, same token positions).
EQUIVALENT_STRATEGIES = {
    "mean": PoolingStrategy.REDUCE_MEAN,
    "cls": PoolingStrategy.FIRST_TOKEN,
    "max": PoolingStrategy.REDUCE_MAX,
    "lasttoken": PoolingStrategy.LAST_TOKEN,
}
# Older configs spell the mode as booleans; listed in the order sentence-transformers concatenates them.
LEGACY_POOLING_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
TRANSFORMER, POOLING, DENSE, NORMALIZE = "transformer", "pooling", "dense", "normalize"
# A Dense module's activation, as sentence-transformers saves it (the torch class), -> the graph's name for it.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.GELU": "gelu",
}
DEFAULT_DENSE_ACTIVATION = "torch.nn.modules.activation.Tanh"  # Dense's default when its config names none
DENSE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True, kw_only=True)
class SentenceTransformersModel:
    """What AUTO resolved a sentence-transformers folder to."""

    pooling_mode: str  # as the Pooling config names it
    strategy: PoolingStrategy
    normalize: bool  # a Normalize module follows the pooling
    max_seq_length: int
    do_lower_case: bool  # sentence_bert_config.json's: a Lowercase before the tokenizer's own normalizer
    tokenizer_lowercases: bool  # the tokenizer as a whole lower-cases (this, or its own normalizer)
    dense: tuple = ()  # one dict per Dense module, in order: path, in_features, out_features, bias, activation

    def record(self) -> dict:
        """What the manifest keeps of it (``sentence_transformers``), also reported in server_config."""
        return {"resolved_from": AUTO, "pooling_mode": self.pooling_mode, "pooling_strategy": self.strategy.name,
                "pooling_layer": [LAST_LAYER], "normalize": self.normalize, "max_seq_length": self.max_seq_length,
                "do_lower_case": self.do_lower_case, "tokenizer": TOKENIZER_FILE, "dense": list(self.dense)}


def read_sentence_transformers(model_dir: Path, config: EncoderConfig) -> SentenceTransformersModel:
    """The settings of the sentence-transformers pipeline in ``model_dir``; SourceError when there is none or when
    it holds something the export cannot reproduce exactly."""
    model_dir = Path(model_dir)
    modules_file = model_dir / MODULES_FILE
    if not modules_file.is_file():
        raise SourceError(f"-pooling_strategy AUTO reads a sentence-transformers model, but {model_dir} has no "
                          f"{MODULES_FILE}; choose a pooling strategy such as REDUCE_MEAN instead")
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise SourceError(f"{modules_file} is not a sentence-transformers module list")
    kinds = [_kind(module) for module in modules]
    between = kinds[2:-1] if kinds[-1] == NORMALIZE else kinds[2:]
    if kinds[:2] != [TRANSFORMER, POOLING] or any(kind != DENSE for kind in between):
        pipeline = " -> ".join(str(module["type"]) for module in modules)
        raise SourceError(f"{modules_file}: AUTO reproduces Transformer -> Pooling (-> Dense ...) (-> Normalize) "
                          f"only, this model is {pipeline}")
    if modules[0].get("path", "") not in ("", "."):
        raise SourceError(f"{modules_file}: the Transformer lives in {modules[0]['path']}/; AUTO reads a model whose "
                          f"encoder is at the folder's root")

    pooling_mode = _pooling_mode(model_dir / modules[1].get("path", "") / POOLING_CONFIG)
    if pooling_mode not in EQUIVALENT_STRATEGIES:
        supported = ", ".join(EQUIVALENT_STRATEGIES)
        raise SourceError(f"pooling mode {pooling_mode!r} of {model_dir.name} has no equivalent pooling strategy "
                          f"(AUTO supports {supported})")
    st_config_file = model_dir / SENTENCE_BERT_CONFIG
    st_config = _read_json(st_config_file) if st_config_file.is_file() else {}
    do_lower_case = bool(st_config.get("do_lower_case", False))
    tokenizer = model_tokenizer(model_dir, model_type=config.model_type, lowercase_first=do_lower_case)
    return SentenceTransformersModel(
        pooling_mode=pooling_mode,
        strategy=EQUIVALENT_STRATEGIES[pooling_mode],
        normalize=NORMALIZE in kinds,
        max_seq_length=_max_seq_length(model_dir, st_config, config),
        do_lower_case=do_lower_case,
        tokenizer_lowercases=lowercases(tokenizer.normalizer),
        dense=_dense_layers(model_dir, [m for m, kind in zip(modules, kinds) if kind == DENSE], config.hidden_size),
    )


def resolve_auto(model_dir: Path, config: EncoderConfig, flags: dict, *, explicit: frozenset) -> dict:
    """bert-export's flags with AUTO replaced by what the folder says. ``explicit`` names the flags given on the
    command line: -max_seq_len overrides the model's length and -normalize adds normalization; -pooling_layer and
    -cased_tokenization contradict what AUTO decides and are refused."""
    for flag in ("pooling_layer", "cased_tokenization"):
        if flag in explicit:
            raise OptionError(f"-pooling_strategy AUTO takes -{flag} from the sentence-transformers model; drop "
                              f"-{flag}")
    model = read_sentence_transformers(model_dir, config)
    return {**flags,
            "pooling_strategy": model.strategy,
            "pooling_layer": (LAST_LAYER,),
            "normalize": bool(flags.get("normalize")) or model.normalize,
            "max_seq_len": flags["max_seq_len"] if "max_seq_len" in explicit else model.max_seq_length,
            "cased_tokenization": not model.tokenizer_lowercases,
            "sentence_transformers": model.record()}


def dense_weights(model_dir: Path, dense: list) -> dict:
    """The Dense layers' weights under the graph's names ``dense_I/kernel`` ([in, out]) and ``dense_I/bias``."""
    import numpy as np

    from .weights import _read_torch_bin

    weights = {}
    for index, layer in enumerate(dense):
        folder = Path(model_dir) / layer["path"]
        if (folder / DENSE_WEIGHTS[0]).is_file():
            from safetensors.numpy import load_file

            tensors = load_file(str(folder / DENSE_WEIGHTS[0]))
        else:
            tensors = _read_torch_bin(folder / DENSE_WEIGHTS[1])
        shapes = {"linear.weight": (layer["out_features"], layer["in_features"])}
        if layer["bias"]:
            shapes["linear.bias"] = (layer["out_features"],)
        for name, shape in shapes.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape) if name in tensors else "nothing"
                raise SourceError(f"{folder}: {name} should have shape {shape}, found {found}")
        weights[f"dense_{index}/kernel"] = np.ascontiguousarray(tensors["linear.weight"].T, dtype=np.float32)
        if layer["bias"]:
            weights[f"dense_{index}/bias"] = np.asarray(tensors["linear.bias"], dtype=np.float32)
    return weights


def _dense_layers(model_dir: Path, modules: list, width: int) -> tuple:
    """Each Dense module's settings, checked: a chain of widths starting at the pooled width, known activations."""
    layers = []
    for module in modules:
        folder = model_dir / module.get("path", "")
        config = _read_json(folder / POOLING_CONFIG)
        activation = config.get("activation_function", DEFAULT_DENSE_ACTIVATION)
        if activation not in DENSE_ACTIVATIONS:
            raise SourceError(f"{folder}: activation {activation} has no equivalent in the graph (AUTO supports "
                              f"{', '.join(name.rsplit('.', 1)[-1] for name in DENSE_ACTIVATIONS)})")
        if config.get("use_residual") or config.get("module_input_name", "sentence_embedding") != "sentence_embedding":
            raise SourceError(f"{folder}: AUTO applies a Dense layer to the sentence embedding without a residual only")
        if int(config["in_features"]) != width:
            raise SourceError(f"{folder}: in_features {config['in_features']} does not follow the width {width}")
        if not any((folder / name).is_file() for name in DENSE_WEIGHTS):
            raise SourceError(f"{folder} has no weights ({' or '.join(DENSE_WEIGHTS)})")
        width = int(config["out_features"])
        layers.append({"path": module.get("path", ""), "in_features": int(config["in_features"]),
                       "out_features": width, "bias": bool(config.get("bias", True)),
                       "activation": DENSE_ACTIVATIONS[activation]})
    return tuple(layers)


def _kind(module: dict) -> str:
    """``sentence_transformers.models.Pooling`` and ``sentence_transformers.base.modules.pooling`` -> "pooling"."""
    return str(module["type"]).rsplit(".", 1)[-1].lower()


def _pooling_mode(path: Path) -> str:
    if not path.is_file():
        raise SourceError(f"{path} is missing: the Pooling module's config")
    config = _read_json(path)
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [name for key, name in LEGACY_POOLING_KEYS if config.get(key)]
    if not modes:
        raise SourceError(f"{path} names no pooling mode")
    return "+".join(modes)


def _max_seq_length(model_dir: Path, st_config: dict, config: EncoderConfig) -> int:
    """sentence_bert_config.json's, else the tokenizer's model_max_length (where sentence-transformers 6 keeps it)
    capped at the most tokens the model takes (sentence-transformers caps at the position table's rows: 514 for
    XLM-R, whose 514th token would fail)."""
    length: Optional[int] = st_config.get("max_seq_length")
    if length is None:
        declared = tokenizer_settings(model_dir).get("model_max_length")
        length = min(int(declared), config.max_position_embeddings) if declared else config.max_position_embeddings
    return int(length)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e
