"""MPNet: BERT's post-LN layers plus a relative position bias, under MPNet's names, without token types.

The bias is one learned value per attention head and bucket of the distance key - query (``encoder.
relative_attention_bias``), bucketed as transformers' MPNetEncoder does -- bidirectional, 32 buckets, exact up to
8 tokens each way, logarithmic up to 128 -- computed once and added to every layer's attention scores
(encoder.py). Absolute positions are numbered from padding_idx + 1 = 2 as in RoBERTa (MPNetEmbeddings fixes
padding_idx at 1, whatever pad_token_id says): 514 rows hold 512 tokens. The attention's projections are
``attention.attn.q/k/v/o`` and its LayerNorm ``attention.LayerNorm``; task models hold the model under ``mpnet.``.
segment_ids are ignored; CLS_POOLED reads the pooler where the checkpoint saved one (MPNetModel does).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..encoder_config import EncoderConfig, activation, require, tokens_held
from ..errors import SourceError

MODEL_TYPES = ("mpnet",)
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
TASK_PREFIX = "mpnet."  # the base model inside MPNetFor*
POSITION_OFFSET = 2  # MPNetEmbeddings.padding_idx (1) + 1
# MPNetEncoder.compute_position_bias buckets with its defaults, not the config's relative_attention_num_buckets
# (which only sizes the table): 32 buckets over distances up to 128.
BUCKETS, MAX_DISTANCE = 32, 128
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")
_RENAMES = {
    "attention.attn.q.": "attention.self.query.",
    "attention.attn.k.": "attention.self.key.",
    "attention.attn.v.": "attention.self.value.",
    "attention.attn.o.": "attention.output.dense.",
    "attention.LayerNorm.": "attention.output.LayerNorm.",
}


def read_config(data: dict, path: Path) -> EncoderConfig:
    require(data, REQUIRED_KEYS, path, "MPNet")
    buckets = int(data.get("relative_attention_num_buckets", BUCKETS))
    if buckets != BUCKETS:
        raise SourceError(f"{path}: relative_attention_num_buckets {buckets} is not supported (transformers' MPNet "
                          f"buckets distances into {BUCKETS} whatever the config says; only {BUCKETS} is exported)")
    config = EncoderConfig(
        model_type="mpnet",
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["hidden_size"]),
        num_hidden_layers=int(data["num_hidden_layers"]),
        num_attention_heads=int(data["num_attention_heads"]),
        intermediate_size=int(data["intermediate_size"]),
        hidden_act=activation(data.get("hidden_act", "gelu"), path),
        max_position_embeddings=tokens_held(int(data.get("max_position_embeddings", 512)), POSITION_OFFSET, path),
        position_offset=POSITION_OFFSET,
        type_vocab_size=0,
        token_types=False,
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        relative_attention_num_buckets=BUCKETS,
        relative_attention_max_distance=MAX_DISTANCE,
    )
    config.check(path)
    return config


def neutral_name(hf_name: str) -> str | None:
    from ..weights import bert_name

    name = hf_name.removeprefix(TASK_PREFIX)
    if name == "encoder.relative_attention_bias.weight":
        return "encoder/relative_attention_bias"  # [buckets, heads], a table: not transposed
    layer = _LAYER.match(name)
    if layer:
        index, rest = layer.groups()
        for own, bert in _RENAMES.items():
            if rest.startswith(own):
                return bert_name(f"encoder.layer.{index}.{bert}{rest[len(own):]}")
    return bert_name(name)  # embeddings, the rest of each layer (BERT's names), the pooler; None for task heads


def read_weights(folder: Path, *, config: EncoderConfig, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_hf_weights

    return load_hf_weights(folder, config=config, neutral_name=neutral_name)
