"""What an export records next to its model, so the bridge is never told twice (DESIGN.md, decision 2).

A model folder in a Triton repository looks like::

    REPO/NAME/config.pbtxt
    REPO/NAME/bert_export.json     <- ExportManifest
    REPO/NAME/vocab.txt            <- BERT only: the WordPiece vocabulary the bridge tokenizes with
    REPO/NAME/tokenizer.json       <- the model's own tokenizer, which the bridge then runs (every family but BERT,
                                      and BERT exported with -pooling_strategy AUTO or with a head)
    REPO/NAME/1/model.onnx         (model.py beside it for the embedded target, model.plan for tensorrt, ...)

This module imports only the standard library: the bridge reads manifests without loading TensorFlow or ONNX.
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

MANIFEST_FILE = "bert_export.json"
VOCAB_FILE = "vocab.txt"
FORMAT_VERSION = 1

# Triton tensor names, shared by every target.
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
OUTPUT_NAME = "encodes"

# What a model does (the bridge routes by it): embed (vectors, every export before heads), rerank (a classification
# head with one label: a relevance score per pair), classify (a head with several labels), sparse (SPLADE).
EMBED, RERANK, CLASSIFY, SPARSE = "embed", "rerank", "classify", "sparse"
TASKS = (EMBED, RERANK, CLASSIFY, SPARSE)
# How the bridge turns a classification head's logits into scores (unless a client asks for raw scores).
SCORE_ACTIVATIONS = ("sigmoid", "softmax", "identity", "tanh")


class PoolingStrategy(enum.IntEnum):
    """The original's strategies; the int values are what the original sent in server_config."""

    NONE = 0
    REDUCE_MAX = 1
    REDUCE_MEAN = 2
    REDUCE_MEAN_MAX = 3
    FIRST_TOKEN = 4
    LAST_TOKEN = 5
    CLS_POOLED = 6
    SPLADE = 7  # not the original's: a masked-language-model head's vocabulary-sized vector (heads.py)

    @classmethod
    def parse(cls, name: str) -> "PoolingStrategy":
        aliases = {"CLS_TOKEN": "FIRST_TOKEN", "SEP_TOKEN": "LAST_TOKEN"}
        key = name.strip().upper()
        try:
            return cls[aliases.get(key, key)]
        except KeyError:
            choices = ", ".join([m.name for m in cls] + list(aliases))
            raise ValueError(f"unknown pooling strategy {name!r}; choose one of {choices}") from None


def parse_max_seq_len(text: str) -> Optional[int]:
    """The original's -max_seq_len: an integer > 3, or NONE for dynamic length (None). Raises ValueError."""
    if text.strip().upper() == "NONE":
        return None
    try:
        length = int(text)
    except ValueError:
        raise ValueError(f"max_seq_len must be an integer > 3 or NONE, got {text!r}") from None
    if length <= 3:
        raise ValueError(f"max_seq_len must be an integer > 3 or NONE, got {length}")
    return length


class Target(str, enum.Enum):
    EMBEDDED = "embedded"  # python backend running onnxruntime: what the bundled tritonserver loads
    ONNX = "onnx"  # onnxruntime_onnx backend (NGC tritonserver, CPU or GPU)
    TENSORRT = "tensorrt"  # tensorrt_plan, built on a GPU host
    SAVEDMODEL = "savedmodel"  # tensorflow_savedmodel, Triton <= 25.02


@dataclass(frozen=True)
class ExportManifest:
    """Settings fixed at export time. ``max_seq_len`` None means dynamic length (the original's NONE)."""

    target: str
    pooling_strategy: str
    pooling_layer: tuple
    max_seq_len: Optional[int]
    do_lower_case: bool
    mask_cls_sep: bool
    output_dim: int
    output_dtype: str  # "float32" or "float16"
    max_batch_size: int
    max_position_embeddings: int
    hidden_size: int
    num_hidden_layers: int
    source: str  # where the weights came from (model_dir, or tuned_model_dir/ckpt)
    no_position_embeddings: bool = False
    priority_batch_size: int = 16
    vocab_file: Optional[str] = VOCAB_FILE  # None: the vocabulary is tokenizer_file's (every family but BERT)
    # Added after format 1 shipped; a manifest without them means False / None.
    normalize: bool = False  # every output vector (every token's for NONE) is L2-normalized in the graph
    tokenizer_file: Optional[str] = None  # the bridge tokenizes text with this tokenizer.json instead of the original's
    # The family's cls, sep, pad, unk, mask tokens as its tokenizer names them; None: BERT's [CLS] [SEP] [PAD] [UNK]
    # [MASK]. pair_separators: separators between a pair's parts (1: [CLS] a [SEP] b [SEP]; 2: <s> a </s></s> b </s>).
    special_tokens: Optional[dict] = None
    pair_separators: int = 1
    sentence_transformers: Optional[dict] = None  # what -pooling_strategy AUTO resolved to; None without AUTO
    quantize: Optional[str] = None  # "int8": model.onnx is quantized; extra["quantize_worst_cosine"] is its check
    model_type: str = "bert"  # config.json's model_type: the family (Google checkpoints and older manifests: bert)
    token_types: bool = True  # segment_ids reach the model; False: the graph ignores them (the bridge sends zeros)
    # Heads (heads.py): what the model does, and for a classification head its labels (id2label, in id order) and
    # the activation that turns its logits (the graph's output) into scores; ``head`` describes the head in the graph.
    task: str = EMBED
    labels: Optional[tuple] = None
    activation: Optional[str] = None
    head: Optional[dict] = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        PoolingStrategy.parse(self.pooling_strategy)
        Target(self.target)
        object.__setattr__(self, "pooling_layer", tuple(int(layer) for layer in self.pooling_layer))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.activation is not None and self.activation not in SCORE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(SCORE_ACTIVATIONS)}, got {self.activation!r}")
        if self.max_seq_len is not None and self.max_seq_len <= 3:
            raise ValueError(f"max_seq_len must be > 3 or None, got {self.max_seq_len}")

    @property
    def strategy(self) -> PoolingStrategy:
        return PoolingStrategy.parse(self.pooling_strategy)

    def save(self, model_dir: Path) -> Path:
        path = Path(model_dir) / MANIFEST_FILE
        data = asdict(self)
        data["pooling_layer"] = list(self.pooling_layer)
        if self.labels is not None:
            data["labels"] = list(self.labels)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: Path) -> "ExportManifest":
        path = Path(model_dir) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} has no {MANIFEST_FILE}: it was not written by bert-export")
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {data.get('format_version')}, expected {FORMAT_VERSION}")
        return cls(**data)
