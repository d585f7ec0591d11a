"""The original's pooling and the heads after it, written as ONNX over the encoder's layers (any family).

Semantics follow bert-as-service 1.10 (graph.py): ``pooling_layer`` indexes the encoder layers, several layers are
concatenated along the hidden axis in the given order, and the ``input_mask`` the graph receives drives the pooling.
Every strategy is a per-feature formula, so each layer is pooled on its own and the results concatenated (the same
numbers as pooling the concatenation, without copying the layers together). After the pooling: BERT's pooler
(CLS_POOLED), sentence-transformers Dense modules, the L2 normalization, the fp16 cast.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoder import activation
from .manifest import PoolingStrategy
from .onnx_builder import FLOAT, FLOAT16, INT64, GraphBuilder

MAX_MASK_SUBTRAHEND = 1e30  # the original's masked_reduce_max
MEAN_EPSILON = 1e-10  # the original's masked_reduce_mean
NORM_EPSILON = 1e-12  # torch.nn.functional.normalize's, which sentence-transformers' Normalize module uses


class Pooler:
    """Pools ``[B, T, D]`` layers with the float mask computed once."""

    def __init__(self, g: GraphBuilder, input_mask: str):
        self.g = g
        self.mask = g.op("Cast", input_mask, to=FLOAT, name="pooling_mask")  # [B, T]
        self._count = None

    def pool(self, layers: Sequence[str], strategy: PoolingStrategy) -> str:
        g = self.g
        if strategy is PoolingStrategy.REDUCE_MEAN_MAX:
            parts = [self._mean(x) for x in layers] + [self._max(x) for x in layers]
        else:
            one = {PoolingStrategy.NONE: self._masked, PoolingStrategy.FIRST_TOKEN: self._first,
                   PoolingStrategy.LAST_TOKEN: self._last, PoolingStrategy.REDUCE_MEAN: self._mean,
                   PoolingStrategy.REDUCE_MAX: self._max}[strategy]
            parts = [one(x) for x in layers]
        return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=-1, name="pooled")

    def _masked(self, x: str) -> str:
        """NONE: every token's vector, padding rows exactly zero."""
        return self.g.op("Mul", x, self.g.op("Unsqueeze", self.mask, self.g.constant([-1], np.int64)))

    def _first(self, x: str) -> str:
        return self.g.op("Gather", x, self.g.constant(0, np.int64), axis=1, name="first_token")

    def _last(self, x: str) -> str:
        """The token at sum(mask) - 1 of each row."""
        g = self.g
        last = g.op("Cast", g.op("Sub", self._mask_count(), g.constant(1.0)), to=INT64)  # [B, 1]
        return g.op("GatherND", x, last, batch_dims=1, name="last_token")

    def _mean(self, x: str) -> str:
        """sum(x * m) / (sum(m) + 1e-10): the masked sum as one [1, T] x [T, D] product per row."""
        g = self.g
        weights = g.op("Unsqueeze", self.mask, g.constant([1], np.int64))  # [B, 1, T]
        total = g.op("Squeeze", g.op("MatMul", weights, x), g.constant([1], np.int64))  # [B, D]
        return g.op("Div", total, g.op("Add", self._mask_count(), g.constant(MEAN_EPSILON)), name="mean")

    def _max(self, x: str) -> str:
        """max(x - (1 - m) * 1e30) over the tokens."""
        g = self.g
        penalty = g.op("Mul", g.op("Sub", g.constant(1.0), self.mask), g.constant(MAX_MASK_SUBTRAHEND))
        penalty = g.op("Unsqueeze", penalty, g.constant([-1], np.int64))
        return reduce(g, "ReduceMax", g.op("Sub", x, penalty), axis=1, keepdims=0, name="max")

    def _mask_count(self) -> str:
        if self._count is None:
            self._count = reduce(self.g, "ReduceSum", self.mask, axis=1, keepdims=1, name="mask_count")  # [B, 1]
        return self._count


def bert_pooler(g: GraphBuilder, last_layer: str, weights: dict[str, np.ndarray]) -> str:
    """CLS_POOLED: tanh(dense(the last layer's first token))."""
    first = g.op("Gather", last_layer, g.constant(0, np.int64), axis=1)
    dense = g.op("Add", g.op("MatMul", first, g.weight(weights["pooler/dense/kernel"], "pooler_kernel")),
                 g.weight(weights["pooler/dense/bias"], "pooler_bias"))
    return g.op("Tanh", dense, name="pooler")


def dense_module(g: GraphBuilder, x: str, weights: dict[str, np.ndarray], index: int, kind: str) -> str:
    """A sentence-transformers Dense module: activation(x @ kernel + bias)."""
    x = g.op("MatMul", x, g.weight(weights[f"dense_{index}/kernel"], f"dense_{index}_kernel"))
    if f"dense_{index}/bias" in weights:
        x = g.op("Add", x, g.weight(weights[f"dense_{index}/bias"], f"dense_{index}_bias"))
    return activation(g, x, kind)


def l2_normalize(g: GraphBuilder, x: str) -> str:
    """Each vector along the last axis divided by its length (NONE: each token's; zero padding rows stay zero)."""
    length = g.op("Sqrt", reduce(g, "ReduceSum", g.op("Mul", x, x), axis=-1, keepdims=1))
    return g.op("Div", x, g.op("Max", length, g.constant(NORM_EPSILON)), name="normalized")


def output(g: GraphBuilder, x: str, name: str, *, fp16: bool) -> str:
    if fp16:
        return g.op("Cast", x, to=FLOAT16, output_name=name)
    return g.op("Identity", x, output_name=name)


def reduce(g: GraphBuilder, op_type: str, x: str, *, axis: int, keepdims: int, name: str | None = None) -> str:
    """ReduceSum takes its axes as an input since opset 13, the other reductions since opset 18."""
    if op_type == "ReduceSum" or g.opset >= 18:
        return g.op(op_type, x, g.constant([axis], np.int64), keepdims=keepdims, name=name)
    return g.op(op_type, x, axes=[axis], keepdims=keepdims, name=name)
