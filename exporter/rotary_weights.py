"""Reads an HF folder of a rotary family (ModernBERT, NomicBert, GTE) into the neutral weight names
(rotary_config.RotaryEncoderConfig.weight_shapes lists them).

Each family module gives ``rename``: one HF tensor name (its task-model prefix already stripped) -> a neutral name, or
None to skip it. Packed tensors are named with their parts joined by '+', in the order they are stacked along the
output axis -- ``attention/self/query+key+value`` for ModernBERT's Wqkv, ``intermediate/linear+dense`` for GTE's
up_gate_proj -- and split here. A LayerNorm without a bias (ModernBERT's, by default) gets zero betas: the same
arithmetic, one graph for every family.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .rotary_config import RotaryEncoderConfig
from .weights import check, read_hf_tensors


def load_rotary_weights(folder: Path, *, config: RotaryEncoderConfig, prefixes: tuple[str, ...],
                        rename: Callable[[str], Optional[str]]) -> tuple[dict[str, np.ndarray], str]:
    """The neutral weights of ``folder`` with the file they came from; ``prefixes``: the task models' prefix of the
    base model's names (``model.``, ``gte.``...), stripped first."""
    tensors, path = read_hf_tensors(folder)
    weights: dict[str, np.ndarray] = {}
    for hf_name, array in tensors.items():
        for prefix in prefixes:
            if hf_name.startswith(prefix):
                hf_name = hf_name[len(prefix):]
                break
        name = rename(hf_name)
        if name is None:
            continue
        array = np.asarray(array, dtype=np.float32)
        if name.endswith("/kernel"):
            array = np.ascontiguousarray(array.T)  # torch's [out, in] -> [in, out]
        scope, _, leaf = name.rpartition("/")
        head, _, packed = scope.rpartition("/")
        parts = packed.split("+")
        if len(parts) == 1:
            weights[name] = array
            continue
        for part, piece in zip(parts, np.split(array, len(parts), axis=-1)):  # the output axis, kernel or bias
            weights[f"{head}/{part}/{leaf}"] = np.ascontiguousarray(piece)
    for name in config.weight_shapes():
        gamma = name[: -len("beta")] + "gamma"
        if name.endswith("/beta") and name not in weights and gamma in weights:
            weights[name] = np.zeros_like(weights[gamma])
    check(weights, config, path)
    return weights, str(path)


# --- transformers 5's layout of NomicBertModel and GteModel (the same module names) --------------------------------

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_POST_NORM_LAYER = {
    "self_attn.q_proj": "attention/self/query", "self_attn.k_proj": "attention/self/key",
    "self_attn.v_proj": "attention/self/value", "self_attn.o_proj": "attention/output/dense",
    "mlp.gate_proj": "intermediate/dense",  # activated
    "mlp.up_proj": "intermediate/linear",
    "mlp.down_proj": "output/dense",
    "post_attention_layernorm": "attention/output/LayerNorm", "post_mlp_layernorm": "output/LayerNorm",
}
_TOP = {"embeddings.word_embeddings": "embeddings/word_embeddings",
        "embeddings.token_type_embeddings": "embeddings/token_type_embeddings",
        "embeddings.LayerNorm": "embeddings/LayerNorm", "pooler.dense": "pooler/dense"}
NORM_LEAVES = {"weight": "gamma", "bias": "beta"}
DENSE_LEAVES = {"weight": "kernel", "bias": "bias"}


def post_norm_name(name: str, layer_names: dict[str, str] = _POST_NORM_LAYER,
                   layer_pattern: re.Pattern = _LAYER) -> Optional[str]:
    """A NomicBertModel / GteModel tensor name -> its neutral name (None for task heads and buffers);
    ``layer_names`` and ``layer_pattern`` map another layout of the same layers (the hub's custom-code ones)."""
    module, _, leaf = name.rpartition(".")
    if module in _TOP:
        neutral = _TOP[module]
        if neutral.startswith("embeddings/") and not neutral.endswith("LayerNorm"):
            return neutral if leaf == "weight" else None
    else:
        match = layer_pattern.match(module)
        if not match or match.group(2) not in layer_names:
            return None
        neutral = f"encoder/layer_{match.group(1)}/{layer_names[match.group(2)]}"
    leaves = NORM_LEAVES if neutral.endswith("LayerNorm") else DENSE_LEAVES
    return f"{neutral}/{leaves[leaf]}" if leaf in leaves else None
