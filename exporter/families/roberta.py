"""RoBERTa, XLM-RoBERTa and CamemBERT: BERT's layers and weight names (under ``roberta.`` in task models), with

- positions counted from ``pad_token_id + 1`` (fairseq's convention: the table's first rows are never used), so a
  514-row table holds 512 tokens;
- a token type table of one row (added to every token: the graph folds it into the word table) and no segments;
- a pooler only in some checkpoints (CLS_POOLED where it is saved).
"""
from __future__ import annotations

from pathlib import Path

MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
PREFIXES = ("roberta.",)


def read_config(data: dict, path: Path):
    from ..encoder_config import EncoderConfig, absolute_positions, activation, require

    require(data, REQUIRED_KEYS, path)
    absolute_positions(data, path)
    offset = int(data.get("pad_token_id", 1)) + 1
    config = EncoderConfig(
        model_type=str(data["model_type"]),
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["hidden_size"]),
        num_hidden_layers=int(data["num_hidden_layers"]),
        num_attention_heads=int(data["num_attention_heads"]),
        intermediate_size=int(data["intermediate_size"]),
        hidden_act=activation(data.get("hidden_act", "gelu"), path),
        max_position_embeddings=int(data.get("max_position_embeddings", 514)) - offset,
        type_vocab_size=int(data.get("type_vocab_size", 1)),
        token_types=False,
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        position_offset=offset,
    )
    config.check(path)
    return config


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import bert_name, load_hf_weights

    def neutral_name(hf_name: str) -> str | None:
        for prefix in PREFIXES:
            if hf_name.startswith(prefix):
                hf_name = hf_name[len(prefix):]
        return bert_name(hf_name)

    return load_hf_weights(folder, config=config, neutral_name=neutral_name)
