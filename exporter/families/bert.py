"""BERT: Google TF checkpoints (bert_config.json) and Hugging Face folders (config.json, model_type bert).

The neutral weight names are BERT's own (weights.py); token types, absolute positions from 0, an optional pooler.
"""
from __future__ import annotations

from pathlib import Path

MODEL_TYPES = ("bert",)


def read_config(data: dict, path: Path):
    from ..bert_config import BertConfig

    return BertConfig.from_dict(data, path)


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_weights

    return load_weights(folder, config=config, ckpt_name=ckpt_name)
