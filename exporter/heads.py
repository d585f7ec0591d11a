"""The heads after the encoder, written into the graph beside the pooling (DESIGN.md, decision 9).

- ``classification``: ``out(activation(dense(first token of the last layer)))`` -- BERT's, NomicBert's and GTE's
  pooler and classifier (tanh), RoBERTa's, XLM-R's, CamemBERT's and MPNet's dense and out_proj (tanh), DistilBERT's
  pre_classifier and classifier (relu): one formula over the neutral names ``head/dense`` and ``head/out``.
  ModernBERT's adds a LayerNorm after the activation (``head/norm``) and may read the mean of the real tokens
  instead of the first (``head["pooling"]``). The graph's output is the logits ``[B, num_labels]``; the activation
  that makes scores of them is the bridge's (recorded in the manifest), so a client can still ask for raw scores.
- ``splade``: the masked-language-model head on every token (``head/transform``, the activation, ``head/layer_norm``,
  ``head/decoder``), then ``max over the real tokens of log(1 + relu(logits))``: a vocabulary-sized vector per input.

What a folder's head is, and its weights under the neutral names, is read by head_source.py.
"""
from __future__ import annotations

import numpy as np

from .encoder import activation
from .head_source import CLASSIFICATION
from .manifest import PoolingStrategy
from .onnx_builder import FLOAT, GraphBuilder
from .pooling import Pooler, reduce


def write_head(g: GraphBuilder, head: dict, last_layer: str, input_mask: str, weights: dict[str, np.ndarray]) -> str:
    """The head's output tensor, from the last encoder layer ``[B, T, H]``."""
    if head["kind"] == CLASSIFICATION:
        return classification(g, head, last_layer, input_mask, weights)
    return splade(g, head, last_layer, input_mask, weights)


def reads_first_token_alone(head: dict) -> bool:
    """Whether the head reads nothing of the last layer but its first token (the encoder may then compute that token
    alone in it): a classification head over the first token."""
    return head["kind"] == CLASSIFICATION and head.get("pooling") != "mean"


def classification(g: GraphBuilder, head: dict, last_layer: str, input_mask: str,
                   weights: dict[str, np.ndarray]) -> str:
    """Logits ``[B, num_labels]`` from the first token (or the tokens' mean): out([norm](activation(dense(x))))."""
    if not reads_first_token_alone(head):
        pooled = Pooler(g, input_mask).pool([last_layer], PoolingStrategy.REDUCE_MEAN)
    else:
        pooled = g.op("Gather", last_layer, g.constant(0, np.int64), axis=1, name="head_first_token")
    hidden = activation(g, _linear(g, pooled, weights, "head/dense"), head["activation"])
    if "head/norm/gamma" in weights:
        hidden = _layer_norm(g, hidden, weights, "head/norm", head["layer_norm_eps"])
    return _linear(g, hidden, weights, "head/out")


def splade(g: GraphBuilder, head: dict, last_layer: str, input_mask: str, weights: dict[str, np.ndarray]) -> str:
    """``max_t log(1 + relu(logits[t]))`` over the tokens the mask keeps, ``[B, vocab]``.

    log(1 + relu(x)) never decreases as x grows, so the max of it is it of the max: the logarithm runs on ``[B, V]``
    instead of ``[B, T, V]``, with the same floats. Padding rows are zeroed before the max, which changes nothing
    after the relu (the result is at least 0 anyway)."""
    x = activation(g, _linear(g, last_layer, weights, "head/transform"), head["activation"])
    x = _layer_norm(g, x, weights, "head/layer_norm", head["layer_norm_eps"])
    logits = _linear(g, x, weights, "head/decoder")  # [B, T, V]
    mask = g.op("Unsqueeze", g.op("Cast", input_mask, to=FLOAT), g.constant([-1], np.int64), name="splade_mask")
    largest = reduce(g, "ReduceMax", g.op("Mul", logits, mask), axis=1, keepdims=0, name="splade_max")
    return g.op("Log", g.op("Add", g.op("Relu", largest), g.constant(1.0)), name="splade")


def _linear(g: GraphBuilder, x: str, weights: dict[str, np.ndarray], scope: str) -> str:
    name = scope.replace("/", "_")
    return g.op("Add", g.op("MatMul", x, g.weight(weights[f"{scope}/kernel"], f"{name}_kernel")),
                g.weight(weights[f"{scope}/bias"], f"{name}_bias"), name=name)


def _layer_norm(g: GraphBuilder, x: str, weights: dict[str, np.ndarray], scope: str, epsilon: float) -> str:
    name = scope.replace("/", "_")
    return g.op("LayerNormalization", x, g.weight(weights[f"{scope}/gamma"], f"{name}_gamma"),
                g.weight(weights[f"{scope}/beta"], f"{name}_beta"), axis=-1, epsilon=float(epsilon), name=name)
