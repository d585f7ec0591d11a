"""``EncoderConfig``: the architecture numbers of a post-LN transformer encoder, whatever family it comes from.

Each family (exporter/families/) maps its own config file onto these fields; the shared encoder (encoder.py) reads
nothing else. Only the standard library is imported here: the bridge and ``--help`` read configs too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError

# Exact gelu (erf) is BERT's; the tanh approximation and relu appear in some derivatives and cost nothing to support.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    model_type: str = "bert"  # config.json's (Google checkpoints: "bert")
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"  # one of ACTIVATIONS' values
    # The most tokens one sequence may have. For RoBERTa-style position tables (padding_idx + 1 rows before the
    # first position) that is the table's rows minus position_offset: XLM-R's 514 rows hold 512 tokens.
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # rows of the token type table; 0: the family has none
    token_types: bool = True  # segment_ids reach the model; False: the graph ignores them (the bridge sends zeros)
    layer_norm_eps: float = 1e-12
    position_offset: int = 0  # the position table's row for the first token (RoBERTa, MPNet: padding_idx + 1)
    relative_attention_num_buckets: int = 0  # MPNet's relative position bias, shared by every layer (0: none)
    relative_attention_max_distance: int = 128
    sinusoidal_positions: bool = False  # a fixed sin/cos position table (DistilBERT's option) when none is saved

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def position_rows(self) -> int:
        return self.max_position_embeddings + self.position_offset

    def check(self, path: Path) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise SourceError(f"{path}: hidden_size {self.hidden_size} is not a multiple of num_attention_heads")


def read_json_config(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SourceError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path} is not a model config (expected a JSON object)")
    return data


# What a BERT-shaped config.json (BERT, RoBERTa, XLM-R, CamemBERT, MPNet) names alike, and must name.
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def bert_shape(data: dict, path: Path) -> dict:
    """The ``EncoderConfig`` fields a BERT-shaped config gives under BERT's names: the five sizes (required), the
    activation and the LayerNorm epsilon (transformers' defaults where left out)."""
    require(data, SHAPE_KEYS, path)
    return {**{key: int(data[key]) for key in SHAPE_KEYS},
            "hidden_act": activation(data.get("hidden_act", "gelu"), path),
            "layer_norm_eps": float(data.get("layer_norm_eps", 1e-12))}


def require(data: dict, keys: tuple[str, ...], path: Path) -> None:
    """The keys a family reads; one line naming the missing ones."""
    missing = [key for key in keys if key not in data]
    if missing:
        raise SourceError(f"{path} is not a BERT-family config (model_type {data.get('model_type')!r}, missing "
                          f"{', '.join(missing)})")


def absolute_positions(data: dict, path: Path) -> None:
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise SourceError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")


def activation(name: str, path: Path, key: str = "hidden_act") -> str:
    if name not in ACTIVATIONS:
        raise SourceError(f"{path}: {key} {name!r} is not supported (use one of {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def read_config(path: Path) -> EncoderConfig:
    """The config at ``path``, read by the family its ``model_type`` names (Google's bert_config.json: BERT)."""
    from . import families

    data = read_json_config(path)
    family = families.family_for(str(data.get("model_type", "bert")))
    return family.read_config(data, Path(path))


def tokens_held(position_rows: int, offset: int, path: Path) -> int:
    """The most tokens one sequence may have when its first token reads row ``offset`` of a table of
    ``position_rows`` (RoBERTa-style tables keep the rows up to padding_idx for no token: XLM-R's 514 hold 512)."""
    if position_rows <= offset:
        raise SourceError(f"{path}: max_position_embeddings {position_rows} leaves no position for a token "
                          f"(the first token reads row {offset})")
    return position_rows - offset
