"""``RotaryEncoderConfig``: the architecture of the encoders with rotary positions (ModernBERT, NomicBert, GTE).

What sets them apart from BERT's post-LN blocks, as numbers the writer (rotary_encoder.py) reads:

- no position table: each layer rotates its queries and keys by the token's position (``Rotary``: the base, the
  scaling), ModernBERT with one base for its global and another for its local layers;
- a gated MLP: ``act(x W) * (x V)`` before the output projection (GeGLU, SwiGLU);
- biases only where the family has them (``biases``), LayerNorms without a bias stored as zero betas;
- where the norms sit: after each residual sum (NomicBert, GTE: post-LN like BERT), or before each block with a final
  norm after the last layer (ModernBERT: pre-LN, the first layer's attention reads the embeddings directly);
- local attention: a layer whose ``attention_windows`` entry is ``w > 0`` lets a token see only the tokens at most
  ``w`` positions away (ModernBERT's local layers: w = local_attention / 2).

Only the standard library is imported here (the bridge reads configs too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .encoder_config import EncoderConfig
from .errors import SourceError

# config.json's activation names -> the writer's (gelu is exact, erf-based, as transformers' ACT2FN["gelu"]).
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu",
               "swish": "silu", "relu": "relu"}
# Rotary scalings whose frequencies are fixed for every length up to the model's limit (transformers'
# modeling_rope_utils): "dynamic" only changes them past max_position_embeddings, which max_seq_len never exceeds.
ROPE_TYPES = ("default", "linear", "dynamic")
# Which projections carry a bias (``RotaryEncoderConfig.biases``).
BIAS_NAMES = ("qkv", "attention_output", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class Rotary:
    """One layer type's rotary embedding: inverse frequencies ``1 / base ** (2i / d)``, divided by ``factor`` for
    linear scaling."""

    theta: float
    scaling: str = "default"
    factor: float = 1.0

    def inverse_frequencies(self, head_size: int):
        """float32 [head_size / 2], rounded as transformers' float32 ``base ** (arange / d)`` rounds them."""
        import numpy as np

        exponents = np.arange(0, head_size, 2, dtype=np.float32) / np.float32(head_size)
        powers = (np.float64(self.theta) ** exponents.astype(np.float64)).astype(np.float32)
        inverse = np.float32(1.0) / powers
        if self.scaling == "linear":
            inverse = inverse / np.float32(self.factor)
        return inverse.astype(np.float32)

    def tables(self, head_size: int, length: int):
        """(cos, sin), float32 [length, head_size]: the angle of position p is p * inverse frequency (a float32
        product, as transformers forms it), the halves repeated as its ``rotate_half`` expects."""
        import numpy as np

        angles = np.arange(length, dtype=np.float32)[:, None] * self.inverse_frequencies(head_size)[None, :]
        angles = np.concatenate([angles, angles], axis=1).astype(np.float64)
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class RotaryEncoderConfig(EncoderConfig):
    layer_rotary: tuple[Rotary, ...]  # per layer
    attention_windows: tuple[int, ...] = ()  # per layer: 0 global, w > 0 sees positions within w (empty: all global)
    pre_norm: bool = False  # ModernBERT: x + f(norm(x)), the first layer's attention without a norm, a final norm
    biases: frozenset = field(default_factory=frozenset)  # which of BIAS_NAMES the layers have

    def check(self, path: Path) -> None:
        super().check(path)
        if len(self.layer_rotary) != self.num_hidden_layers:
            raise SourceError(f"{path}: {len(self.layer_rotary)} rotary settings for {self.num_hidden_layers} layers")
        if self.attention_windows and len(self.attention_windows) != self.num_hidden_layers:
            raise SourceError(f"{path}: {len(self.attention_windows)} layer types for {self.num_hidden_layers} layers")
        if self.head_size % 2:
            raise SourceError(f"{path}: rotary positions need an even head size, not {self.head_size}")

    def window(self, layer: int) -> int:
        return self.attention_windows[layer] if self.attention_windows else 0

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the writer reads (neutral names, weights.py) and its shape; the pooler is optional."""
        hidden, inner = self.hidden_size, self.intermediate_size
        shapes = {"embeddings/word_embeddings": (self.vocab_size, hidden),
                  "embeddings/LayerNorm/gamma": (hidden,), "embeddings/LayerNorm/beta": (hidden,)}
        if self.type_vocab_size:
            shapes["embeddings/token_type_embeddings"] = (self.type_vocab_size, hidden)
        dense = {"attention/self/query": ("qkv", hidden, hidden), "attention/self/key": ("qkv", hidden, hidden),
                 "attention/self/value": ("qkv", hidden, hidden),
                 "attention/output/dense": ("attention_output", hidden, hidden),
                 # The gated MLP: act(x @ dense) * (x @ linear), then output/dense.
                 "intermediate/dense": ("mlp_in", hidden, inner), "intermediate/linear": ("mlp_in", hidden, inner),
                 "output/dense": ("mlp_out", inner, hidden)}
        norms = ("attention/LayerNorm", "intermediate/LayerNorm") if self.pre_norm else \
            ("attention/output/LayerNorm", "output/LayerNorm")
        for i in range(self.num_hidden_layers):
            layer = f"encoder/layer_{i}"
            for scope, (bias, fan_in, fan_out) in dense.items():
                shapes[f"{layer}/{scope}/kernel"] = (fan_in, fan_out)
                if bias in self.biases:
                    shapes[f"{layer}/{scope}/bias"] = (fan_out,)
            for norm in norms:
                if self.pre_norm and i == 0 and norm == "attention/LayerNorm":
                    continue  # ModernBERT's first layer reads the (normalized) embeddings as they are
                shapes[f"{layer}/{norm}/gamma"] = (hidden,)
                shapes[f"{layer}/{norm}/beta"] = (hidden,)
        if self.pre_norm:
            shapes["encoder/LayerNorm/gamma"] = (hidden,)
            shapes["encoder/LayerNorm/beta"] = (hidden,)
        return shapes


# --- reading the config files' rotary settings -----------------------------------------------------------------------

def activation(name: str, path: Path) -> str:
    if name not in ACTIVATIONS:
        raise SourceError(f"{path}: activation {name!r} is not supported (use one of {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def rotary(parameters: Optional[dict], path: Path, *, theta: float) -> Rotary:
    """One ``rope_parameters`` dict (transformers 5) or legacy ``rope_scaling`` dict, with ``theta`` where it names
    none; scalings whose frequencies depend on the length are refused in one line."""
    parameters = dict(parameters or {})
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise SourceError(f"{path}: rotary scaling {kind!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if float(parameters.get("partial_rotary_factor", 1.0)) != 1.0:
        raise SourceError(f"{path}: partial rotary embeddings (partial_rotary_factor "
                          f"{parameters['partial_rotary_factor']}) are not supported")
    base = float(parameters.get("rope_theta", theta))
    factor = float(parameters.get("factor", 1.0)) if kind == "linear" else 1.0
    if not (base > 0 and math.isfinite(base) and factor > 0):
        raise SourceError(f"{path}: rotary base {base} and factor {factor} must be positive")
    return Rotary(theta=base, scaling=kind, factor=factor)


def single_rotary(data: dict, path: Path, *, default_theta: float) -> Rotary:
    """A config with one rotary embedding for every layer: ``rope_parameters``, or ``rope_theta`` and
    ``rope_scaling`` as older configs (and the hub's custom-code ones) write them."""
    theta = float(data.get("rope_theta") or default_theta)
    parameters = data.get("rope_parameters")
    if parameters is None:
        parameters = {**(data.get("rope_scaling") or {}), "rope_theta": theta}
    return rotary(parameters, path, theta=theta)


def positive(data: dict, key: str, path: Path, family: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SourceError(f"{path}: {family} config needs a positive integer {key}, not {value!r}")
    return value
