"""MPNet: BERT-like post-LN layers under other names (``attention.attn.q``, ``attention.attn.o``,
``attention.LayerNorm``; ``mpnet.`` in task models), no token types, RoBERTa's positions (from padding_idx + 1 = 2:
transformers fixes padding_idx at 1 whatever the config says, so 514 rows hold 512 tokens) and a relative position
bias shared by every layer: a learned value per head for each bucket of the distance between key and query --
bidirectional, 32 buckets, exact up to 8 tokens each way, logarithmic up to 128, as transformers' MPNetEncoder --
added to the attention scores (encoder.py). A pooler where the checkpoint saved one (MPNetModel does).
"""
from __future__ import annotations

from pathlib import Path

MODEL_TYPES = ("mpnet",)
PADDING_IDX = 1  # MPNetEmbeddings' own
BUCKETS = 32  # MPNetEncoder.compute_position_bias buckets distances into 32 whatever the config says
SCOPES = {
    "embeddings.word_embeddings": "embeddings/word_embeddings",
    "embeddings.position_embeddings": "embeddings/position_embeddings",
    "embeddings.LayerNorm": "embeddings/LayerNorm",
    "encoder.layer.{i}.attention.attn.q": "encoder/layer_{i}/attention/self/query",
    "encoder.layer.{i}.attention.attn.k": "encoder/layer_{i}/attention/self/key",
    "encoder.layer.{i}.attention.attn.v": "encoder/layer_{i}/attention/self/value",
    "encoder.layer.{i}.attention.attn.o": "encoder/layer_{i}/attention/output/dense",
    "encoder.layer.{i}.attention.LayerNorm": "encoder/layer_{i}/attention/output/LayerNorm",
    "encoder.layer.{i}.intermediate.dense": "encoder/layer_{i}/intermediate/dense",
    "encoder.layer.{i}.output.dense": "encoder/layer_{i}/output/dense",
    "encoder.layer.{i}.output.LayerNorm": "encoder/layer_{i}/output/LayerNorm",
    "encoder.relative_attention_bias": "encoder/relative_attention_bias",
    "pooler.dense": "pooler/dense",
}


def read_config(data: dict, path: Path):
    from ..encoder_config import EncoderConfig, bert_shape, tokens_held
    from ..errors import SourceError

    shape = bert_shape(data, path)
    buckets = int(data.get("relative_attention_num_buckets", BUCKETS))
    if buckets != BUCKETS:
        raise SourceError(f"{path}: relative_attention_num_buckets {buckets} is not supported (transformers' MPNet "
                          f"buckets distances into {BUCKETS} whatever the config says)")
    offset = PADDING_IDX + 1
    config = EncoderConfig(
        model_type="mpnet",
        **shape,
        max_position_embeddings=tokens_held(int(data.get("max_position_embeddings", 512)), offset, path),
        type_vocab_size=0,
        token_types=False,
        position_offset=offset,
        relative_attention_num_buckets=BUCKETS,
    )
    config.check(path)
    return config


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_hf_weights, renamed

    return load_hf_weights(folder, config=config,
                           neutral_name=lambda name: renamed(name, prefixes=("mpnet.",), scopes=SCOPES))
