"""Helpers shared by the exporter's and the families' tests: the oracle (transformers + the original pooling formulas
in numpy), test batches, and writers for Google-format checkpoints. Independent of the exporter's own code on purpose.
A module of its own at the top of tests/, so every folder's tests import it by this name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLS, SEP = 2, 3
TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
TOLERANCE = 1e-4


# --- the oracle ------------------------------------------------------------------------------------------------------

@dataclass
class Reference:
    """transformers' outputs for one batch: encoder layers (embeddings excluded) and the pooler output."""

    layers: list[np.ndarray]
    pooled: np.ndarray


def reference(model, feeds: dict[str, np.ndarray]) -> Reference:
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(feeds["input_ids"].astype(np.int64)),
            attention_mask=torch.from_numpy(feeds["input_mask"].astype(np.int64)),
            token_type_ids=torch.from_numpy(feeds["segment_ids"].astype(np.int64)),
            output_hidden_states=True,
        )
    return Reference(layers=[h.numpy() for h in out.hidden_states[1:]], pooled=out.pooler_output.numpy())


def original_pooling(ref: Reference, mask: np.ndarray, strategy: str, layers: list[int]) -> np.ndarray:
    """bert-as-service 1.10 graph.py, in numpy."""
    if strategy == "CLS_POOLED":
        return ref.pooled
    x = np.concatenate([ref.layers[layer] for layer in layers], axis=-1)
    m = mask.astype(np.float32)[:, :, None]
    mean = (x * m).sum(axis=1) / (m.sum(axis=1) + 1e-10)
    maximum = (x - (1.0 - m) * 1e30).max(axis=1)
    if strategy == "NONE":
        return x * m
    if strategy == "REDUCE_MEAN":
        return mean
    if strategy == "REDUCE_MAX":
        return maximum
    if strategy == "REDUCE_MEAN_MAX":
        return np.concatenate([mean, maximum], axis=1)
    if strategy in ("FIRST_TOKEN", "CLS_TOKEN"):
        return x[:, 0]
    if strategy in ("LAST_TOKEN", "SEP_TOKEN"):
        last = mask.sum(axis=1).astype(int) - 1
        return x[np.arange(len(x)), last]
    raise ValueError(strategy)


def make_batch(lengths: list[int], width: int, *, vocab_size: int, seed: int = 0, pair: bool = True) -> dict:
    """[CLS] tokens [SEP] (tokens [SEP]) rows of the given real lengths, zero-padded to ``width``."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    segments = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(SEP + 1, vocab_size, size=length)
        ids[row, 0] = CLS
        ids[row, length - 1] = SEP
        if pair and length >= 6:  # a sentence pair: second segment after a middle [SEP]
            middle = length // 2
            ids[row, middle - 1] = SEP
            segments[row, middle:length] = 1
    mask = (ids > 0).astype(np.int32)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments}


def mask_cls_sep(feeds: dict) -> dict:
    """What the bridge sends with -mask_cls_sep: the mask is 0 on [CLS] and [SEP] (the original's extract_features)."""
    ids = feeds["input_ids"]
    mask = np.where((ids == CLS) | (ids == SEP), 0, feeds["input_mask"]).astype(np.int32)
    return {**feeds, "input_mask": mask}


def run_onnx(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], feeds)[0]


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = TOLERANCE) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    difference = float(np.abs(actual.astype(np.float32) - expected).max())
    assert difference <= tolerance, f"max abs difference {difference:.3g} > {tolerance}"


# --- sources -------------------------------------------------------------------------------------------------------

def write_vocab(folder: Path, size: int) -> None:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(5, size)]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens))


def google_variables(state: dict[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """HF BertModel state dict -> Google BERT variable names (torch linear [out, in] -> TF kernel [in, out])."""
    v = {
        "bert/embeddings/word_embeddings": state["embeddings.word_embeddings.weight"],
        "bert/embeddings/position_embeddings": state["embeddings.position_embeddings.weight"],
        "bert/embeddings/token_type_embeddings": state["embeddings.token_type_embeddings.weight"],
        "bert/embeddings/LayerNorm/gamma": state["embeddings.LayerNorm.weight"],
        "bert/embeddings/LayerNorm/beta": state["embeddings.LayerNorm.bias"],
        "bert/pooler/dense/kernel": state["pooler.dense.weight"].T,
        "bert/pooler/dense/bias": state["pooler.dense.bias"],
    }
    dense = {"attention/self/query": "attention.self.query", "attention/self/key": "attention.self.key",
             "attention/self/value": "attention.self.value", "attention/output/dense": "attention.output.dense",
             "intermediate/dense": "intermediate.dense", "output/dense": "output.dense"}
    norms = {"attention/output/LayerNorm": "attention.output.LayerNorm", "output/LayerNorm": "output.LayerNorm"}
    for i in range(num_layers):
        for google, hf in dense.items():
            v[f"bert/encoder/layer_{i}/{google}/kernel"] = state[f"encoder.layer.{i}.{hf}.weight"].T
            v[f"bert/encoder/layer_{i}/{google}/bias"] = state[f"encoder.layer.{i}.{hf}.bias"]
        for google, hf in norms.items():
            v[f"bert/encoder/layer_{i}/{google}/gamma"] = state[f"encoder.layer.{i}.{hf}.weight"]
            v[f"bert/encoder/layer_{i}/{google}/beta"] = state[f"encoder.layer.{i}.{hf}.bias"]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in v.items()}


def write_google_checkpoint(prefix: Path, variables: dict[str, np.ndarray]) -> None:
    import tensorflow as tf

    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False)


def state_of(model) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}
