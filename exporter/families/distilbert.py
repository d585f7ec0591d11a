"""DistilBERT: BERT's post-LN layers under their own names and config keys, without token types or a pooler.

Its weights are renamed onto the neutral (BERT) names: ``transformer.layer.N.attention.q_lin`` is the query,
``out_lin`` the attention output, ``sa_layer_norm`` and ``output_layer_norm`` the two LayerNorms, ``ffn.lin1/lin2``
the feed-forward pair; task models hold them under ``distilbert.``. Positions start at 0. A ``sinusoidal_pos_embds``
model saves its fixed table with the weights and transformers reads it back from there, so both kinds of positions
are read the same way. Every LayerNorm has transformers' fixed epsilon 1e-12; segment_ids are ignored, and CLS_POOLED
is refused (no pooler).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..encoder_config import EncoderConfig, activation, require

MODEL_TYPES = ("distilbert",)
REQUIRED_KEYS = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim")
TASK_PREFIX = "distilbert."  # the base model inside DistilBertFor*
LAYER_NORM_EPS = 1e-12  # nn.LayerNorm(dim, eps=1e-12) in every DistilBERT module, whatever the config says
_LAYER = re.compile(r"^transformer\.layer\.(\d+)\.(.*)$")
# DistilBERT's names inside one layer -> BERT's
_RENAMES = {
    "attention.q_lin.": "attention.self.query.",
    "attention.k_lin.": "attention.self.key.",
    "attention.v_lin.": "attention.self.value.",
    "attention.out_lin.": "attention.output.dense.",
    "sa_layer_norm.": "attention.output.LayerNorm.",
    "ffn.lin1.": "intermediate.dense.",
    "ffn.lin2.": "output.dense.",
    "output_layer_norm.": "output.LayerNorm.",
}


def read_config(data: dict, path: Path) -> EncoderConfig:
    require(data, REQUIRED_KEYS, path, "DistilBERT")
    config = EncoderConfig(
        model_type="distilbert",
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["dim"]),
        num_hidden_layers=int(data["n_layers"]),
        num_attention_heads=int(data["n_heads"]),
        intermediate_size=int(data["hidden_dim"]),
        hidden_act=activation(data.get("activation", "gelu"), path),
        max_position_embeddings=int(data.get("max_position_embeddings", 512)),
        type_vocab_size=0,
        token_types=False,
        layer_norm_eps=LAYER_NORM_EPS,
    )
    config.check(path)
    return config


def neutral_name(hf_name: str) -> str | None:
    from ..weights import bert_name

    name = hf_name.removeprefix(TASK_PREFIX)
    layer = _LAYER.match(name)
    if layer:
        index, rest = layer.groups()
        for own, bert in _RENAMES.items():
            if rest.startswith(own):
                return bert_name(f"encoder.layer.{index}.{bert}{rest[len(own):]}")
        return None
    return bert_name(name) if name.startswith("embeddings.") else None  # task heads: classifier, vocab_*, qa_outputs


def read_weights(folder: Path, *, config: EncoderConfig, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import load_hf_weights

    return load_hf_weights(folder, config=config, neutral_name=neutral_name)
