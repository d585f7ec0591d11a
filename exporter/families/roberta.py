"""RoBERTa, XLM-RoBERTa and CamemBERT: BERT's layers and weight names, under the ``roberta.`` prefix in task models.

What differs from BERT: positions are numbered from ``pad_token_id + 1`` (transformers counts the tokens that are not
padding, and the bridge pads on the right, so a real token at position p reads row pad_token_id + 1 + p), which
costs the table that many rows: XLM-R's 514 hold 512 tokens. The token type table has one row, added to every
token: segment_ids are ignored. The pooler exists only where the checkpoint saved one (RobertaModel does, task models
do not), and CLS_POOLED is refused without it.
"""
from __future__ import annotations

from pathlib import Path

from ..encoder_config import EncoderConfig, activation, require, tokens_held
from ..errors import SourceError

MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
TASK_PREFIX = "roberta."  # the base model inside RobertaFor*, XLMRobertaFor*, CamembertFor*


def read_config(data: dict, path: Path) -> EncoderConfig:
    model_type = data["model_type"]
    require(data, REQUIRED_KEYS, path, model_type)
    if data.get("is_decoder"):
        raise SourceError(f"{path}: this {model_type} is a decoder (is_decoder true); bert-export exports encoders")
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise SourceError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")
    offset = int(data.get("pad_token_id", 1)) + 1
    config = EncoderConfig(
        model_type=model_type,
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["hidden_size"]),
        num_hidden_layers=int(data["num_hidden_layers"]),
        num_attention_heads=int(data["num_attention_heads"]),
        intermediate_size=int(data["intermediate_size"]),
        hidden_act=activation(data.get("hidden_act", "gelu"), path),
        max_position_embeddings=tokens_held(int(data.get("max_position_embeddings", 512)), offset, path),
        position_offset=offset,
        type_vocab_size=int(data.get("type_vocab_size", 2)),
        token_types=False,
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
    )
    config.check(path)
    return config


def neutral_name(hf_name: str) -> str | None:
    from ..weights import bert_name

    return bert_name(hf_name.removeprefix(TASK_PREFIX))


def read_weights(folder: Path, *, config: EncoderConfig, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_hf_weights

    return load_hf_weights(folder, config=config, neutral_name=neutral_name)
