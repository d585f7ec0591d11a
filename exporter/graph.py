"""The TensorFlow 2 BERT encoder with the original's pooling inside the graph: the SavedModel target's model
(Triton <= 25.02), checked against the ONNX model of the same export (targets.py); BERT only.

Pure TF2 (a ``tf.Module`` whose ``encode`` is a ``tf.function`` over ``[None, None]`` int32 inputs); nothing is
XLA-compiled, so Triton's TensorFlow backend runs it anywhere.

Semantics follow bert-as-service 1.10 (graph.py) on Google's modeling.py: ``pooling_layer`` indexes the encoder
layers (embeddings excluded), several layers are concatenated along the hidden axis in the given order, and the
``input_mask`` the graph receives drives both attention and pooling.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from .bert_config import BertConfig
from .errors import OptionError
from .manifest import INPUT_NAMES, OUTPUT_NAME, PoolingStrategy
from .options import check_layers

ATTENTION_MASK_ADDER = -10000.0  # Google's modeling.py; exp() of it underflows to exactly 0 in float32
MAX_MASK_SUBTRAHEND = 1e30  # the original's masked_reduce_max
MEAN_EPSILON = 1e-10  # the original's masked_reduce_mean
NORM_EPSILON = 1e-12  # torch.nn.functional.normalize's, which sentence-transformers' Normalize module uses


def input_signature() -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]


class BertEncoder(tf.Module):
    """BERT + pooling. ``encode(input_ids, input_mask, segment_ids)`` returns ``{"encodes": ...}``."""

    def __init__(self, *, config: BertConfig, weights: dict[str, np.ndarray], strategy: PoolingStrategy,
                 pooling_layer: Sequence[int], use_position_embeddings: bool = True, fp16: bool = False,
                 normalize: bool = False, dense_activations: Sequence[str] = ()):
        super().__init__(name="bert")
        check_layers(config, pooling_layer)
        if strategy is PoolingStrategy.CLS_POOLED and "pooler/dense/kernel" not in weights:
            raise OptionError("-pooling_strategy CLS_POOLED needs the pooler weights, which this checkpoint lacks")
        self.config = config
        self.strategy = strategy
        self.pooling_layer = tuple(pooling_layer)
        self.use_position_embeddings = use_position_embeddings
        self.output_dtype = tf.float16 if fp16 else tf.float32
        self.normalize = normalize
        # sentence-transformers Dense modules after the pooling: weights dense_I/kernel (and dense_I/bias).
        self.dense_activations = tuple(dense_activations)
        # The pooler only when it is used: checkpoints without one still export every other strategy.
        needed = [name for name in weights if not name.startswith("pooler/") or strategy is PoolingStrategy.CLS_POOLED]
        self.variables_by_name = {name: tf.Variable(weights[name], trainable=False, name=name.replace("/", "_"))
                                  for name in needed}
        self.encode = tf.function(self._encode, input_signature=input_signature())

    # --- building blocks -----------------------------------------------------------------------------------------

    def _w(self, name: str) -> tf.Variable:
        return self.variables_by_name[name]

    def _dense(self, x, scope: str):
        return tf.matmul(x, self._w(f"{scope}/kernel")) + self._w(f"{scope}/bias")

    def _layer_norm(self, x, scope: str):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = tf.reduce_mean(tf.pow(centered, 2.0), axis=-1, keepdims=True)
        normed = centered / tf.sqrt(variance + self.config.layer_norm_eps)
        return normed * self._w(f"{scope}/gamma") + self._w(f"{scope}/beta")

    def _activation(self, x):
        kind = self.config.hidden_act
        if kind == "gelu":
            return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
        if kind == "gelu_tanh":
            return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
        return tf.nn.relu(x)

    def _embeddings(self, input_ids, segment_ids):
        """[B, T] ids -> [B*T, H] token states."""
        x = tf.gather(self._w("embeddings/word_embeddings"), input_ids)
        x += tf.gather(self._w("embeddings/token_type_embeddings"), segment_ids)
        if self.use_position_embeddings:
            length = tf.shape(input_ids)[1]
            x += self._w("embeddings/position_embeddings")[tf.newaxis, :length, :]
        return self._layer_norm(tf.reshape(x, [-1, self.config.hidden_size]), "embeddings/LayerNorm")

    def _attention(self, x, mask_adder, shape, scope: str):
        heads, head_size = self.config.num_attention_heads, self.config.head_size
        batch, length = shape

        def split_heads(t):  # [B*T, H*d] -> [B, H, T, d]
            return tf.transpose(tf.reshape(t, [batch, length, heads, head_size]), [0, 2, 1, 3])

        query = split_heads(self._dense(x, f"{scope}/self/query"))
        key = split_heads(self._dense(x, f"{scope}/self/key"))
        value = split_heads(self._dense(x, f"{scope}/self/value"))
        scores = tf.matmul(query, key, transpose_b=True) * (1.0 / math.sqrt(head_size)) + mask_adder
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), value)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, heads * head_size])
        return self._layer_norm(x + self._dense(context, f"{scope}/output/dense"), f"{scope}/output/LayerNorm")

    def _layer(self, x, mask_adder, shape, index: int):
        scope = f"encoder/layer_{index}"
        x = self._attention(x, mask_adder, shape, f"{scope}/attention")
        inner = self._activation(self._dense(x, f"{scope}/intermediate/dense"))
        return self._layer_norm(x + self._dense(inner, f"{scope}/output/dense"), f"{scope}/output/LayerNorm")

    def _dense_module(self, x, index: int, activation: str):
        """A sentence-transformers Dense module: activation(x @ kernel + bias)."""
        x = tf.matmul(x, self._w(f"dense_{index}/kernel"))
        if f"dense_{index}/bias" in self.variables_by_name:
            x += self._w(f"dense_{index}/bias")
        if activation == "tanh":
            return tf.tanh(x)
        if activation == "relu":
            return tf.nn.relu(x)
        if activation == "sigmoid":
            return tf.sigmoid(x)
        if activation == "gelu":
            return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
        return x  # identity

    # --- the graph -----------------------------------------------------------------------------------------------

    def _encode(self, input_ids, input_mask, segment_ids):
        shape = (tf.shape(input_ids)[0], tf.shape(input_ids)[1])  # B, T
        mask = tf.cast(input_mask, tf.float32)  # [B, T]
        mask_adder = (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * ATTENTION_MASK_ADDER  # [B, 1, 1, T]
        # Token states stay a [B*T, H] matrix between layers, as in Google's modeling.py: plain 2-D MatMuls.
        x = self._embeddings(input_ids, segment_ids)
        count = self.config.num_hidden_layers
        # Run only as deep as the deepest layer pooled (CLS_POOLED reads the last one).
        wanted = {layer % count for layer in self.pooling_layer}
        depth = count if self.strategy is PoolingStrategy.CLS_POOLED else max(wanted) + 1
        layers = []
        for index in range(depth):
            x = self._layer(x, mask_adder, shape, index)
            layers.append(x)
        hidden_size = self.config.hidden_size
        if self.strategy is PoolingStrategy.CLS_POOLED:
            first_tokens = tf.reshape(layers[-1], [shape[0], shape[1], hidden_size])[:, 0, :]
            pooled = tf.tanh(self._dense(first_tokens, "pooler/dense"))
        else:
            selected = [tf.reshape(layers[layer % count], [shape[0], shape[1], hidden_size])
                        for layer in self.pooling_layer]
            hidden = selected[0] if len(selected) == 1 else tf.concat(selected, axis=-1)
            pooled = pool(hidden, mask, self.strategy)
        for index, activation in enumerate(self.dense_activations):
            pooled = self._dense_module(pooled, index, activation)
        if self.normalize:  # after pooling and layer concatenation, in float32, before the fp16 cast
            pooled = l2_normalize(pooled)
        return {OUTPUT_NAME: tf.cast(pooled, self.output_dtype)}


def l2_normalize(vectors):
    """Each vector along the last axis divided by its length (NONE: each token's; zero padding rows stay zero)."""
    length = tf.sqrt(tf.reduce_sum(tf.square(vectors), axis=-1, keepdims=True))
    return vectors / tf.maximum(length, NORM_EPSILON)


def pool(hidden, mask, strategy: PoolingStrategy):
    """The original's pooling formulas over ``hidden`` [B, T, D] with the float mask [B, T]."""
    expanded = mask[:, :, tf.newaxis]
    if strategy is PoolingStrategy.NONE:
        return hidden * expanded  # padding rows become exactly zero
    if strategy is PoolingStrategy.FIRST_TOKEN:
        return hidden[:, 0, :]
    if strategy is PoolingStrategy.LAST_TOKEN:
        last = tf.cast(tf.reduce_sum(mask, axis=1), tf.int32) - 1
        rows = tf.range(tf.shape(last)[0])
        return tf.gather_nd(hidden, tf.stack([rows, last], axis=1))
    mean = tf.reduce_sum(hidden * expanded, axis=1) / (tf.reduce_sum(mask, axis=1, keepdims=True) + MEAN_EPSILON)
    if strategy is PoolingStrategy.REDUCE_MEAN:
        return mean
    maximum = tf.reduce_max(hidden - (1.0 - expanded) * MAX_MASK_SUBTRAHEND, axis=1)
    if strategy is PoolingStrategy.REDUCE_MAX:
        return maximum
    if strategy is PoolingStrategy.REDUCE_MEAN_MAX:
        return tf.concat([mean, maximum], axis=1)
    raise AssertionError(f"unhandled pooling strategy {strategy!r}")
