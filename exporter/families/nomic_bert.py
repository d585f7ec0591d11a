"""NomicBert (``model_type`` nomic_bert: nomic-embed-text): BERT's post-LN layers and token types with rotary
positions (base 1,000 by default), a SwiGLU MLP and no biases in the projections.

Read from transformers 5's config and weight names (NomicBertModel), and from the layout of the hub's custom-code
checkpoints, which transformers renames on loading (``n_embd``, ``n_layer``, ``rotary_emb_base``..., tensors
``encoder.layers.N.attn.Wqkv``, ``mlp.fc11``/``fc12``/``fc2``, ``norm1``/``norm2``, ``emb_ln``). Settings of that
code that transformers' NomicBert cannot express (prenorm, biases, interleaved or partial rotary, NTK scaling) are
refused in one line.
"""
from __future__ import annotations

import re
from pathlib import Path

MODEL_TYPES = ("nomic_bert",)
DEFAULT_THETA = 1000.0
TASK_PREFIXES = ("nomic_bert.",)
# The hub's custom-code config names -> transformers'.
HUB_KEYS = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
            "n_inner": "intermediate_size", "n_positions": "max_position_embeddings",
            "layer_norm_epsilon": "layer_norm_eps", "rotary_emb_base": "rope_theta"}
# Hub settings transformers' NomicBert has no room for: each must hold its plain value.
HUB_PLAIN = {"prenorm": False, "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
             "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_scaling_factor": None,
             "causal": False}
HUB_ACTIVATIONS = {"swiglu": "silu"}  # the gated MLP's activation, as the hub's code names its GLU


def read_config(data: dict, path: Path):
    from ..errors import SourceError
    from ..rotary_config import RotaryEncoderConfig, activation, positive, single_rotary

    data = dict(data)
    for hub, key in HUB_KEYS.items():
        if key not in data and data.get(hub) is not None:
            data[key] = data[hub]
    for key, plain in HUB_PLAIN.items():
        if data.get(key, plain) != plain:
            raise SourceError(f"{path}: NomicBert with {key} {data[key]!r} is not supported (only {plain!r})")
    if "hidden_act" not in data and "activation_function" in data:
        if data["activation_function"] not in HUB_ACTIVATIONS:
            raise SourceError(f"{path}: activation_function {data['activation_function']!r} is not supported "
                              f"(only {', '.join(HUB_ACTIVATIONS)})")
        data["hidden_act"] = HUB_ACTIVATIONS[data["activation_function"]]
    family = "NomicBert"
    hidden = positive(data, "hidden_size", path, family)
    heads = positive(data, "num_attention_heads", path, family)
    if data.get("head_dim") not in (None, hidden // heads) or hidden % heads:
        raise SourceError(f"{path}: head_dim {data.get('head_dim')} times {heads} heads must be hidden_size {hidden}")
    layers = positive(data, "num_hidden_layers", path, family)
    config = RotaryEncoderConfig(
        model_type="nomic_bert",
        vocab_size=positive(data, "vocab_size", path, family),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=positive(data, "intermediate_size", path, family),
        hidden_act=activation(data.get("hidden_act", "silu"), path),
        max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
        type_vocab_size=int(data.get("type_vocab_size", 2)),
        token_types=int(data.get("type_vocab_size", 2)) > 1,
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        layer_rotary=(single_rotary(data, path, default_theta=DEFAULT_THETA),) * layers,
    )
    config.check(path)
    return config


# The hub's custom-code layout; transformers' own is rotary_weights.post_norm_name's.
_HUB_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_HUB_LAYER_NAMES = {
    "attn.Wqkv": "attention/self/query+key+value", "attn.out_proj": "attention/output/dense",
    "mlp.fc11": "intermediate/linear", "mlp.fc12": "intermediate/dense",  # fc12 is the activated one
    "mlp.fc2": "output/dense", "norm1": "attention/output/LayerNorm", "norm2": "output/LayerNorm",
}


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..rotary_weights import load_rotary_weights, post_norm_name

    def neutral_name(name: str):
        if name.startswith("emb_ln."):
            name = "embeddings.LayerNorm." + name[len("emb_ln."):]
        if name.startswith("encoder.layers."):
            return post_norm_name(name, _HUB_LAYER_NAMES, _HUB_LAYER)
        return post_norm_name(name)

    return load_rotary_weights(folder, config=config, prefixes=TASK_PREFIXES, rename=neutral_name)
