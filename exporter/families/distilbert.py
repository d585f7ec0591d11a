"""DistilBERT: BERT's post-LN layers under other names (``transformer.layer.N.attention.q_lin``, ``sa_layer_norm``,
``ffn.lin1``...; ``distilbert.`` in task models), its own config keys (``dim``, ``n_layers``, ``hidden_dim``,
``activation``), no token types, no pooler, positions learned or sinusoidal as ``sinusoidal_pos_embds`` says, and a
layer-norm epsilon of 1e-12 whatever the config holds (transformers' DistilBertModel fixes it).
"""
from __future__ import annotations

from pathlib import Path

MODEL_TYPES = ("distilbert",)
REQUIRED_KEYS = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim")
SCOPES = {
    "embeddings.word_embeddings": "embeddings/word_embeddings",
    "embeddings.position_embeddings": "embeddings/position_embeddings",
    "embeddings.LayerNorm": "embeddings/LayerNorm",
    "transformer.layer.{i}.attention.q_lin": "encoder/layer_{i}/attention/self/query",
    "transformer.layer.{i}.attention.k_lin": "encoder/layer_{i}/attention/self/key",
    "transformer.layer.{i}.attention.v_lin": "encoder/layer_{i}/attention/self/value",
    "transformer.layer.{i}.attention.out_lin": "encoder/layer_{i}/attention/output/dense",
    "transformer.layer.{i}.sa_layer_norm": "encoder/layer_{i}/attention/output/LayerNorm",
    "transformer.layer.{i}.ffn.lin1": "encoder/layer_{i}/intermediate/dense",
    "transformer.layer.{i}.ffn.lin2": "encoder/layer_{i}/output/dense",
    "transformer.layer.{i}.output_layer_norm": "encoder/layer_{i}/output/LayerNorm",
}


def read_config(data: dict, path: Path):
    from ..encoder_config import EncoderConfig, activation, require

    require(data, REQUIRED_KEYS, path)
    config = EncoderConfig(
        model_type="distilbert",
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["dim"]),
        num_hidden_layers=int(data["n_layers"]),
        num_attention_heads=int(data["n_heads"]),
        intermediate_size=int(data["hidden_dim"]),
        hidden_act=activation(data.get("activation", "gelu"), path, key="activation"),
        max_position_embeddings=int(data.get("max_position_embeddings", 512)),
        type_vocab_size=0,
        token_types=False,
        layer_norm_eps=1e-12,
        sinusoidal_positions=bool(data.get("sinusoidal_pos_embds", False)),
    )
    config.check(path)
    return config


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_hf_weights, renamed

    return load_hf_weights(folder, config=config,
                           neutral_name=lambda name: renamed(name, prefixes=("distilbert.",), scopes=SCOPES))
