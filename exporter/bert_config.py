"""``BertConfig``: the architecture numbers of a BERT, read from Google's ``bert_config.json`` or HF's ``config.json``.

Both files use the same key names (HF adds ``model_type``, ``layer_norm_eps`` and friends); anything that is not a
plain post-LN BERT encoder is refused here, before any weight is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .encoder_config import ACTIVATIONS, EncoderConfig, bert_shape, read_json_config
from .errors import SourceError

__all__ = ["ACTIVATIONS", "BERT_MODEL_TYPES", "BertConfig"]

BERT_MODEL_TYPES = {"bert"}


@dataclass(frozen=True, kw_only=True)
class BertConfig(EncoderConfig):
    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        return cls.from_dict(read_json_config(path), Path(path))

    @classmethod
    def from_dict(cls, data: dict, path: Path) -> "BertConfig":
        model_type = data.get("model_type", "bert")
        if model_type not in BERT_MODEL_TYPES:
            raise SourceError(f"{path} is not a BERT config (model_type {model_type!r})")
        shape = bert_shape(data, path)
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise SourceError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")
        config = cls(
            **shape,
            max_position_embeddings=int(data.get("max_position_embeddings", 512)),
            type_vocab_size=int(data.get("type_vocab_size", 2)),
        )
        config.check(path)
        return config
