"""``BertConfig``: the architecture numbers of a BERT, read from Google's ``bert_config.json`` or HF's ``config.json``.

Both files use the same key names (HF adds ``model_type``, ``layer_norm_eps`` and friends); anything that is not a
plain post-LN BERT encoder is refused here, before any weight is read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError

REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# Exact gelu (erf) is BERT's; the tanh approximation and relu appear in some derivatives and cost nothing to support.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
BERT_MODEL_TYPES = {"bert"}


@dataclass(frozen=True, kw_only=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"  # one of ACTIVATIONS' values
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SourceError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SourceError(f"cannot read config {path}: {e}") from e
        if not isinstance(data, dict):
            raise SourceError(f"{path} is not a BERT config (expected a JSON object)")
        model_type = data.get("model_type", "bert")
        if model_type not in BERT_MODEL_TYPES:
            raise SourceError(f"{path} is not a BERT config (model_type {model_type!r})")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise SourceError(f"{path} is not a BERT config (missing {', '.join(missing)})")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise SourceError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")
        activation = data.get("hidden_act", "gelu")
        if activation not in ACTIVATIONS:
            raise SourceError(f"{path}: hidden_act {activation!r} is not supported "
                              f"(use one of {', '.join(ACTIVATIONS)})")
        config = cls(
            vocab_size=int(data["vocab_size"]),
            hidden_size=int(data["hidden_size"]),
            num_hidden_layers=int(data["num_hidden_layers"]),
            num_attention_heads=int(data["num_attention_heads"]),
            intermediate_size=int(data["intermediate_size"]),
            hidden_act=ACTIVATIONS[activation],
            max_position_embeddings=int(data.get("max_position_embeddings", 512)),
            type_vocab_size=int(data.get("type_vocab_size", 2)),
            layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        )
        if config.hidden_size % config.num_attention_heads:
            raise SourceError(f"{path}: hidden_size {config.hidden_size} is not a multiple of num_attention_heads")
        return config
