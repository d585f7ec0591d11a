"""ModernBERT (``model_type`` modernbert): pre-LN layers with a final norm, rotary positions with one base for the
global layers and another for the local ones, GeGLU MLPs, no biases and bias-free norms by default, no token types.

Every ``global_attn_every_n_layers``-th layer (from the first) attends globally, the others within a sliding window
of ``local_attention`` tokens: a token sees those at most ``local_attention / 2`` positions away (transformers'
``sliding_window``). Configs name the layer pattern and the rotary bases two ways, both read here: transformers 5's
``layer_types`` and ``rope_parameters`` per layer type, and the hub's ``global_attn_every_n_layers``,
``global_rope_theta``, ``local_rope_theta`` (with an optional ``rope_scaling`` for both).

Pooling a layer: -1 is transformers' last hidden state (after the final norm), the others the residual stream after
that layer, as ``output_hidden_states`` gives them.
"""
from __future__ import annotations

import re
from pathlib import Path

MODEL_TYPES = ("modernbert",)
DEFAULT_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}
LEGACY_THETA_KEYS = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
TASK_PREFIXES = ("model.",)  # ModernBertFor* keep the base model under model.


def read_config(data: dict, path: Path):
    from ..errors import SourceError
    from ..rotary_config import RotaryEncoderConfig, activation, positive, rotary

    family = "ModernBERT"
    layers = positive(data, "num_hidden_layers", path, family)
    every = positive(data, "global_attn_every_n_layers", path, family) if "global_attn_every_n_layers" in data else 3
    layer_types = data.get("layer_types") or [
        "sliding_attention" if i % every else "full_attention" for i in range(layers)]
    unknown = sorted(set(layer_types) - set(DEFAULT_THETA))
    if unknown or len(layer_types) != layers:
        raise SourceError(f"{path}: layer_types must name full_attention or sliding_attention for each of the "
                          f"{layers} layers")
    parameters = data.get("rope_parameters") or {}
    rotaries = {}
    for kind, default in DEFAULT_THETA.items():
        theta = data.get(LEGACY_THETA_KEYS[kind]) or default
        own = parameters.get(kind) if kind in parameters else {**(data.get("rope_scaling") or {})}
        rotaries[kind] = rotary(own, path, theta=float(theta))
    window = positive(data, "local_attention", path, family) // 2 if "local_attention" in data else 64
    biases = set()
    if data.get("attention_bias", False):
        biases |= {"qkv", "attention_output"}
    if data.get("mlp_bias", False):
        biases |= {"mlp_in", "mlp_out"}
    config = RotaryEncoderConfig(
        model_type="modernbert",
        vocab_size=positive(data, "vocab_size", path, family),
        hidden_size=positive(data, "hidden_size", path, family),
        num_hidden_layers=layers,
        num_attention_heads=positive(data, "num_attention_heads", path, family),
        intermediate_size=positive(data, "intermediate_size", path, family),
        hidden_act=activation(data.get("hidden_activation", "gelu"), path),
        max_position_embeddings=int(data.get("max_position_embeddings", 8192)),
        type_vocab_size=0,
        token_types=False,
        layer_norm_eps=float(data.get("norm_eps", 1e-5)),
        layer_rotary=tuple(rotaries[kind] for kind in layer_types),
        attention_windows=tuple(window if kind == "sliding_attention" else 0 for kind in layer_types),
        pre_norm=True,
        biases=frozenset(biases),
    )
    config.check(path)
    return config


_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "attn_norm": "attention/LayerNorm",
    "attn.Wqkv": "attention/self/query+key+value",
    "attn.Wo": "attention/output/dense",
    "mlp_norm": "intermediate/LayerNorm",
    "mlp.Wi": "intermediate/dense+linear",  # input (activated), then gate
    "mlp.Wo": "output/dense",
}
_NORM = {"weight": "gamma", "bias": "beta"}
_DENSE = {"weight": "kernel", "bias": "bias"}


def neutral_name(name: str) -> str | None:
    """A ModernBertModel tensor name -> its neutral name (None for task heads)."""
    module, _, leaf = name.rpartition(".")
    if module == "embeddings.tok_embeddings" and leaf == "weight":
        return "embeddings/word_embeddings"
    if module == "embeddings.norm":
        return f"embeddings/LayerNorm/{_NORM[leaf]}"
    if module == "final_norm":
        return f"encoder/LayerNorm/{_NORM[leaf]}"
    match = _LAYER.match(module)
    if match and match.group(2) in _LAYER_NAMES:
        neutral = _LAYER_NAMES[match.group(2)]
        leaves = _NORM if neutral.endswith("LayerNorm") else _DENSE
        return f"encoder/layer_{match.group(1)}/{neutral}/{leaves[leaf]}"
    return None  # head., classifier., decoder. of the task models


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..rotary_weights import load_rotary_weights

    return load_rotary_weights(folder, config=config, prefixes=TASK_PREFIXES, rename=neutral_name)
