"""What the service makes of a head's output (the graph gives logits, or SPLADE's dense vocabulary vector): scores,
rankings, labelled predictions, sparse vectors. Plain numpy, the same for every front end.

A classification head's scores are its logits passed through the activation its export recorded (sigmoid, softmax,
identity, tanh: what the model's CrossEncoder or transformers' pipeline applies), in float32; a client may ask for the
raw logits instead.
"""
from __future__ import annotations

import numpy as np

__all__ = ["activate", "ranking", "labelled", "sparse"]


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores ``[N, num_labels]`` from logits: softmax over the labels of each row, the others element-wise."""
    logits = np.asarray(logits, dtype=np.float32)
    if activation == "sigmoid":
        # 1 / (1 + e^-x), computed without overflow for large negative logits
        e = np.exp(-np.abs(logits))
        return np.where(logits >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    if activation == "tanh":
        return np.tanh(logits)
    if activation == "identity":
        return logits
    raise ValueError(f"unknown activation {activation!r}")


def ranking(scores: np.ndarray) -> list[int]:
    """Input indices from the highest score to the lowest; equal scores keep their input order."""
    return sorted(range(len(scores)), key=lambda i: -float(scores[i]))


def labelled(scores: np.ndarray, labels: tuple) -> list[list[dict]]:
    """Per input, ``[{label, score}]`` from the highest score to the lowest."""
    return [[{"label": labels[j], "score": float(row[j])} for j in ranking(row)] for row in scores]


def sparse(vectors: np.ndarray) -> list[list[dict]]:
    """Per input, its non-zero entries ``[{index, value}]`` in index order."""
    rows = []
    for vector in vectors:
        indices = np.flatnonzero(vector)
        rows.append([{"index": int(i), "value": float(v)} for i, v in zip(indices, vector[indices])])
    return rows
