"""GTE (``model_type`` gte, and ``new`` as the hub's gte-*-v1.5 and gte-multilingual-base configs name it): BERT's
post-LN layers with rotary positions (base 160,000 by default), biased attention projections, a gated MLP without
input biases (GeGLU by default), and token types only where ``type_vocab_size`` says (0 or 1: none to speak of).

transformers 5's GteModel and the hub's custom-code "new" checkpoints are the same architecture; transformers reads
the latter by renaming (prefix ``new.``, ``encoder.layer.N.attention.qkv_proj`` packed, ``mlp.up_gate_proj`` packed
up-then-gate, ``attn_ln``/``mlp_ln``), and so does this module. Settings of the custom code outside transformers'
GTE (RMS norms, log-n attention scaling, unpacked projections, NTK rotary scaling) are refused in one line.
"""
from __future__ import annotations

import re
from pathlib import Path

MODEL_TYPES = ("gte", "new")
DEFAULT_THETA = 160_000.0
TASK_PREFIXES = ("gte.", "new.")
# The custom code's settings that must hold their plain value here.
HUB_PLAIN = {"position_embedding_type": "rope", "layer_norm_type": "layer_norm", "logn_attention_scale": False,
             "logn_attention_clip1": False, "pack_qkv": True}


def read_config(data: dict, path: Path):
    from ..errors import SourceError
    from ..rotary_config import RotaryEncoderConfig, activation, positive, single_rotary

    for key, plain in HUB_PLAIN.items():
        if data.get(key, plain) != plain:
            raise SourceError(f"{path}: GTE with {key} {data[key]!r} is not supported (only {plain!r})")
    family = "GTE"
    layers = positive(data, "num_hidden_layers", path, family)
    types = int(data.get("type_vocab_size", 1))
    config = RotaryEncoderConfig(
        model_type=str(data.get("model_type", "gte")),
        vocab_size=positive(data, "vocab_size", path, family),
        hidden_size=positive(data, "hidden_size", path, family),
        num_hidden_layers=layers,
        num_attention_heads=positive(data, "num_attention_heads", path, family),
        intermediate_size=positive(data, "intermediate_size", path, family),
        hidden_act=activation(data.get("hidden_act", "gelu"), path),
        max_position_embeddings=int(data.get("max_position_embeddings", 8192)),
        type_vocab_size=types,
        token_types=types > 1,
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        layer_rotary=(single_rotary(data, path, default_theta=DEFAULT_THETA),) * layers,
        biases=frozenset({"qkv", "attention_output", "mlp_out"}),
    )
    config.check(path)
    return config


# The hub's custom-code layout; transformers' own is rotary_weights.post_norm_name's.
_HUB_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HUB_LAYER_NAMES = {
    "attention.qkv_proj": "attention/self/query+key+value", "attention.o_proj": "attention/output/dense",
    "mlp.up_gate_proj": "intermediate/linear+dense",  # up, then the activated gate
    "mlp.down_proj": "output/dense", "attn_ln": "attention/output/LayerNorm", "mlp_ln": "output/LayerNorm",
}


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..rotary_weights import load_rotary_weights, post_norm_name

    def neutral_name(name: str):
        if name.startswith("encoder.layer."):
            return post_norm_name(name, _HUB_LAYER_NAMES, _HUB_LAYER)
        return post_norm_name(name)

    return load_rotary_weights(folder, config=config, prefixes=TASK_PREFIXES, rename=neutral_name)
