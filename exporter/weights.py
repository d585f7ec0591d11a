"""Reads encoder weights from every supported source into one neutral dict of float32 numpy arrays.

Neutral names are Google's TF variable names without the ``bert/`` scope, linear kernels in ``[in, out]`` layout,
whatever the family (each family's module maps its own names onto these)::

    embeddings/word_embeddings                      [vocab, hidden]
    embeddings/LayerNorm/gamma                      [hidden]
    encoder/layer_0/attention/self/query/kernel     [hidden, hidden]
    encoder/layer_0/intermediate/dense/kernel       [hidden, intermediate]
    encoder/relative_attention_bias                 [buckets, heads]   (MPNet only)
    pooler/dense/kernel                             [hidden, hidden]   (optional: only CLS_POOLED needs it)

Formats: a Google TF checkpoint (``bert_model.ckpt.*``, BERT only), HF ``model.safetensors`` (single or sharded) and
HF ``pytorch_model.bin`` (needs torch), with or without the prefix of HF task models (``bert.``, ``roberta.``, ...).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .encoder_config import EncoderConfig
from .errors import SourceError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"


def expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every encoder tensor and its shape (the pooler is optional: only CLS_POOLED needs it)."""
    if hasattr(config, "weight_shapes"):  # layouts beyond BERT's list their own (rotary_config.py)
        return config.weight_shapes()
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings/word_embeddings": (config.vocab_size, hidden),
        "embeddings/position_embeddings": (config.position_rows, hidden),
        "embeddings/LayerNorm/gamma": (hidden,),
        "embeddings/LayerNorm/beta": (hidden,),
    }
    if config.type_vocab_size:
        shapes["embeddings/token_type_embeddings"] = (config.type_vocab_size, hidden)
    if config.relative_attention_num_buckets:
        shapes["encoder/relative_attention_bias"] = (config.relative_attention_num_buckets,
                                                     config.num_attention_heads)
    dense = {"attention/self/query": (hidden, hidden), "attention/self/key": (hidden, hidden),
             "attention/self/value": (hidden, hidden), "attention/output/dense": (hidden, hidden),
             "intermediate/dense": (hidden, inner), "output/dense": (inner, hidden)}
    for i in range(config.num_hidden_layers):
        layer = f"encoder/layer_{i}"
        for scope, (fan_in, fan_out) in dense.items():
            shapes[f"{layer}/{scope}/kernel"] = (fan_in, fan_out)
            shapes[f"{layer}/{scope}/bias"] = (fan_out,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{layer}/{norm}/gamma"] = (hidden,)
            shapes[f"{layer}/{norm}/beta"] = (hidden,)
    return shapes


def checkpoint_exists(folder: Path, ckpt_name: str) -> bool:
    return Path(f"{Path(folder) / ckpt_name}.index").is_file()


def load_weights(folder: Path, *, config: EncoderConfig, ckpt_name: str) -> tuple[dict[str, np.ndarray], str]:
    """A BERT's weights found in ``folder`` (a Google checkpoint or an HF folder), with the file they came from."""
    folder = Path(folder)
    if folder.is_dir() and checkpoint_exists(folder, ckpt_name):
        path = folder / ckpt_name
        weights = _load_google_checkpoint(path)
        check(weights, config, path)
        return weights, str(path)
    return load_hf_weights(folder, config=config, neutral_name=bert_name,
                           also_expected=f"{ckpt_name}.index (Google checkpoint), ")


NeutralName = Callable[[str], Optional[str]]


def load_hf_weights(folder: Path, *, config: EncoderConfig, neutral_name: NeutralName,
                    also_expected: str = "") -> tuple[dict[str, np.ndarray], str]:
    """The tensors of an HF folder under their neutral names (``neutral_name`` maps one HF name, or None to skip
    it); torch linear weights ``[out, in]`` become kernels ``[in, out]``."""
    tensors, path = read_hf_tensors(folder, also_expected=also_expected)
    weights = {}
    for hf_name, array in tensors.items():
        name = neutral_name(hf_name)
        if name is None:
            continue
        array = np.asarray(array, dtype=np.float32)
        weights[name] = np.ascontiguousarray(array.T) if name.endswith("/kernel") else array
    if config.sinusoidal_positions and "embeddings/position_embeddings" not in weights:
        weights["embeddings/position_embeddings"] = sinusoidal_positions(config.position_rows, config.hidden_size)
    check(weights, config, path)
    return weights, str(path)


def sinusoidal_positions(rows: int, width: int) -> np.ndarray:
    """The fixed position table of the Transformer paper: sin on even, cos on odd features (DistilBERT's option)."""
    angles = np.arange(rows)[:, None] / np.power(10000, 2 * (np.arange(width) // 2) / width)[None, :]
    table = np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)


def read_hf_tensors(folder: Path, *, also_expected: str = "") -> tuple[dict[str, np.ndarray], Path]:
    """Every tensor of an HF folder under its own name (model.safetensors, sharded or not, or pytorch_model.bin),
    with the file they came from."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"model folder {folder} does not exist")
    if (folder / SAFETENSORS_FILE).is_file() or (folder / SAFETENSORS_INDEX).is_file():
        return _read_safetensors(folder), folder / SAFETENSORS_FILE
    if (folder / TORCH_FILE).is_file():
        return _read_torch_bin(folder / TORCH_FILE), folder / TORCH_FILE
    raise SourceError(f"no weights in {folder}: expected {also_expected}{SAFETENSORS_FILE} or {TORCH_FILE}")


def check(weights: dict[str, np.ndarray], config: EncoderConfig, path: Path) -> None:
    """Every tensor the graph reads is present with the shape the config implies (the pooler when present)."""
    shapes = expected_shapes(config)
    if "pooler/dense/kernel" in weights:
        shapes.update({"pooler/dense/kernel": (config.hidden_size, config.hidden_size),
                       "pooler/dense/bias": (config.hidden_size,)})
    missing = [name for name in shapes if name not in weights]
    if missing:
        family = "BERT" if config.model_type == "bert" else config.model_type
        raise SourceError(f"{path} is not a {family} checkpoint matching its config: {len(missing)} tensors missing, "
                          f"e.g. {missing[0]}")
    for name, shape in shapes.items():
        if weights[name].shape != shape:
            raise SourceError(f"{path}: {name} has shape {weights[name].shape}, the config implies {shape}")


# --- Google TF checkpoints -------------------------------------------------------------------------------------------

def _load_google_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    weights = {}
    for name in reader.get_variable_to_shape_map():
        # Fine-tuned checkpoints also hold optimizer slots (adam_m/adam_v), cls/ heads and global_step: skip them.
        if name.startswith("bert/") and not name.endswith(("/adam_m", "/adam_v")):
            weights[name[len("bert/"):]] = np.asarray(reader.get_tensor(name), dtype=np.float32)
    return weights


# --- Hugging Face folders --------------------------------------------------------------------------------------------

def _read_safetensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = [SAFETENSORS_FILE]
    tensors = {}
    for shard in shards:
        tensors.update(load_file(str(folder / shard)))
    return tensors


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise SourceError(f"{path} needs torch to read (pip install torch), "
                          "or convert it to model.safetensors") from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def bert_name(hf_name: str) -> str | None:
    """A BERT's HF tensor name -> its neutral name (None for task heads and buffers)."""
    name = hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
    if not name.startswith(("embeddings.", "encoder.", "pooler.")) or name == "embeddings.position_ids":
        return None  # task heads (cls., classifier.) and buffers we do not use
    name = _HF_LAYER.sub(r"encoder.layer_\1.", name).replace(".", "/")
    if "/LayerNorm/" in name:
        return name.replace("/weight", "/gamma").replace("/bias", "/beta")
    if name.startswith("embeddings/") and name.endswith("/weight"):
        return name[: -len("/weight")]
    if name.endswith("/weight"):
        return name[: -len("/weight")] + "/kernel"
    return name


def renamed(hf_name: str, *, prefixes: tuple[str, ...], scopes: dict[str, str]) -> str | None:
    """A family's HF tensor name -> its neutral name, by module path: ``scopes`` maps the family's module (``{i}``
    standing for a layer number) to the neutral scope; None for anything else (task heads, buffers).

    The neutral scope says what the module is: a ``LayerNorm`` keeps ``gamma``/``beta``, an embedding table
    (``..._embeddings``, ``relative_attention_bias``) is the scope itself, any other module is linear (``kernel``,
    ``bias``)."""
    for prefix in prefixes:
        if hf_name.startswith(prefix):
            hf_name = hf_name[len(prefix):]
            break
    module, _, parameter = hf_name.rpartition(".")
    layer = _LAYER_NUMBER.search(module)
    key = _LAYER_NUMBER.sub(".{i}.", module, count=1) if layer else module
    scope = scopes.get(key)
    if scope is None or parameter not in ("weight", "bias"):
        return None
    scope = scope.format(i=layer.group(1)) if layer else scope
    if scope.endswith("LayerNorm"):
        return f"{scope}/{'gamma' if parameter == 'weight' else 'beta'}"
    if scope.endswith(("_embeddings", "relative_attention_bias")):
        return scope if parameter == "weight" else None
    return f"{scope}/{'kernel' if parameter == 'weight' else 'bias'}"


_LAYER_NUMBER = re.compile(r"\.(\d+)\.")
