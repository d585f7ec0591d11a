"""The encoder of the rotary families (ModernBERT, NomicBert, GTE: rotary_config.py), written as ONNX over the shared
writer (encoder.py): its embeddings (no position table), pooling and heads are the shared ones; the layers are these.

Attention in three shapes, chosen per layer so that memory grows linearly with the length (a base model's full
[B, heads, T, T] scores take 3 GB per row at 8,192 tokens):

- global layers, fused form (the CPU targets): onnxruntime's MultiHeadAttention without a mask input, which runs its
  flash-attention kernel (never the T x T scores; 3.6x faster than the masked kernel at 4,096 tokens). The padding
  mask rides along in the scores themselves: every head's query gets one more component, 1, and every key one more,
  0 for a real token and -10000 / scale for padding, so q.k gains exactly the mask's -10000 after scaling.
- global layers, standard form (TensorRT): softmax(q k^T / sqrt(d) + mask) v in ai.onnx operators; TensorRT fuses it.
- local layers (ModernBERT's sliding window, both forms): the queries in blocks of ``c``, each against the ``c + 2w``
  keys around it (one Gather of overlapping windows), with a constant band bias for |query - key| <= w: linear in the
  length, exact, and the same for every target.

The int8 form (-quantize int8) is the fused one with int8 projections, as the shared writer makes it: the query/key/
value and the MLP blocks quantize each call's input without its padding and each row's first and last token (run in
float32 beside), the attention output projection quantizes all of it; attention itself stays float32.

Queries and keys are rotated as transformers' ``apply_rotary_pos_emb`` does (x cos + rotate_half(x) sin), from cos
and sin tables of the model's maximum length computed here once (Rotary.tables).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .encoder import EncoderWriter, Form, _Int8Rows
from .errors import OptionError
from .onnx_builder import FLOAT, MICROSOFT, GraphBuilder
from .rotary_config import Rotary, RotaryEncoderConfig

MASKED = -10000.0  # added to a masked score, as the shared writer's ATTENTION_MASK_ADDER
# Queries per block in local layers (at least the half-window w): blocks of 64 against 64 + 2w keys keep ModernBERT's
# local layers (w = 64) at 1.5x the band's arithmetic, and each block's product large enough for the CPU's GEMM.
LOCAL_BLOCK = 64


class RotaryEncoderWriter(EncoderWriter):
    """Writes the embeddings and the first ``depth`` layers; ``write`` returns each layer's output tensor, the last
    layer's after the final norm where the family has one (as transformers' last hidden state)."""

    config: RotaryEncoderConfig

    def __init__(self, graph: GraphBuilder, config: RotaryEncoderConfig, weights: dict[str, np.ndarray], *,
                 form: Form, use_position_embeddings: bool = True, max_length: int | None = None):
        if not use_position_embeddings:
            raise OptionError(f"-no_position_embeddings: a {config.model_type} model has rotary positions, not a "
                              f"position table to leave out")
        super().__init__(graph, config, weights, form=form, use_position_embeddings=False, max_length=max_length)
        self._rotations: dict[Rotary, tuple[str, str]] = {}
        self._windows: dict[int, WindowLayout] = {}
        self._key_component: str | None = None
        self._score_mask: str | None = None

    # Rotary positions and local windows are laid out for every query: the last layer runs whole.
    trims_last_layer = False

    def write(self, input_ids: str, input_mask: str, segment_ids: str, *, depth: int,
              first_token_only: bool = False) -> list[str]:
        assert not first_token_only, "rotary encoders write every layer whole"
        g, c = self.g, self.config
        self._length = g.op("Shape", input_ids, start=1, end=2, name="sequence_length")  # [1]
        # (1 - mask) * -10000 per key, [B, T]: every attention shape adds it in its own layout.
        mask = g.op("Cast", input_mask, to=FLOAT, name="mask_float")
        self._key_bias = g.op("Mul", g.op("Sub", g.constant(1.0), mask), g.constant(MASKED), name="key_bias")
        if self.int8:
            self.rows = _Int8Rows(g, input_mask)  # the shared writer's int8 row split, as its write() makes it
        x = self._embeddings(input_ids, segment_ids)
        return self._pre_norm_layers(x, depth) if c.pre_norm else self._post_norm_layers(x, depth)

    # --- layer order ---------------------------------------------------------------------------------------------

    def _post_norm_layers(self, x: str, depth: int) -> list[str]:
        """NomicBert, GTE: x = norm(x + attention(x)); x = norm(x + mlp(x)), as BERT."""
        layers = []
        for index in range(depth):
            scope = f"encoder/layer_{index}"
            _, x = self._add_norm(self._attention(x, index), x, self._output_bias(index, "attention"),
                                  f"{scope}/attention/output/LayerNorm", f"layer{index}_attention")
            _, x = self._add_norm(self._mlp(x, index), x, self._output_bias(index, "mlp"),
                                  f"{scope}/output/LayerNorm", f"layer{index}_output")
            layers.append(x)
        return layers

    def _pre_norm_layers(self, x: str, depth: int) -> list[str]:
        """ModernBERT: h = x + attention(norm(x)); x = h + mlp(norm(h)); a final norm after the last layer. Each norm
        is fused with the residual sum before it (SkipLayerNormalization's sum and normalized outputs)."""
        count = self.config.num_hidden_layers
        normed = x  # the first layer's attention reads the normalized embeddings as they are
        layers = []
        for index in range(depth):
            x, normed = self._add_norm(self._attention(normed, index), x, self._output_bias(index, "attention"),
                                       f"encoder/layer_{index}/intermediate/LayerNorm", f"layer{index}_attention")
            mlp, bias = self._mlp(normed, index), self._output_bias(index, "mlp")
            if index + 1 == count:  # transformers' last hidden state is the final norm's
                layers.append(self._add_norm(mlp, x, bias, "encoder/LayerNorm", "final")[1])
            elif index + 1 < depth:  # the next layer's attention norm
                x, normed = self._add_norm(mlp, x, bias, f"encoder/layer_{index + 1}/attention/LayerNorm",
                                           f"layer{index}_output")
                layers.append(x)
            else:  # the deepest layer pooled: its residual sum, no norm after it
                layers.append(self.g.op("Add", self.g.op("Add", mlp, bias) if bias else mlp, x,
                                        name=f"layer{index}_output_sum"))
        return layers

    # --- blocks --------------------------------------------------------------------------------------------------

    def _output_bias(self, index: int, block: str) -> str | None:
        """The bias of the projection that closes ``block`` ("attention" or "mlp") in layer ``index``, as a graph
        weight; None where the family's layers have none."""
        scope, kind = {"attention": ("attention/output/dense", "attention_output"),
                       "mlp": ("output/dense", "mlp_out")}[block]
        if kind not in self.config.biases:
            return None
        return self.g.weight(self._w(f"encoder/layer_{index}/{scope}/bias"), f"layer{index}_{block}_out_bias")

    def _add_norm(self, x: str, residual: str, bias: str | None, norm_scope: str, name: str) -> tuple[str, str]:
        """(x + bias + residual, its LayerNorm with ``norm_scope``'s weights)."""
        g = self.g
        gamma, beta = self._w(f"{norm_scope}/gamma"), self._w(f"{norm_scope}/beta")
        if self.fused:
            outputs = g.op("SkipLayerNormalization", x, residual, g.weight(gamma, f"{name}_ln_gamma"),
                           g.weight(beta, f"{name}_ln_beta"), bias, domain=MICROSOFT,
                           epsilon=self.config.layer_norm_eps, name=f"{name}_ln", outputs=4)
            return outputs[3], outputs[0]
        total = g.op("Add", g.op("Add", x, bias) if bias else x, residual, name=f"{name}_sum")
        return total, self._layer_norm(total, gamma, beta, f"{name}_ln")

    def _mlp(self, x: str, index: int) -> str:
        """act(x @ dense) * (x @ linear) @ output, the output bias left to the residual sum: both input projections
        as one product, split after it."""
        g, c, w = self.g, self.config, self._w
        scope = f"encoder/layer_{index}"
        kernel_in = np.concatenate([w(f"{scope}/intermediate/dense/kernel"),
                                    w(f"{scope}/intermediate/linear/kernel")], axis=1)
        bias_in = None
        if "mlp_in" in c.biases:
            bias_in = g.weight(np.concatenate([w(f"{scope}/intermediate/dense/bias"),
                                               w(f"{scope}/intermediate/linear/bias")]), f"layer{index}_mlp_in_bias")
        kernel_out, inner = w(f"{scope}/output/dense/kernel"), c.intermediate_size

        def block(h: str, quantized: bool) -> str:
            h = self._matmul(h, kernel_in, f"layer{index}_mlp_in", quantized)
            h = g.op("Add", h, bias_in) if bias_in else h
            activated, linear = g.op("Split", h, g.constant([inner, inner], np.int64), axis=-1, outputs=2,
                                     name=f"layer{index}_glu")
            return self._matmul(g.op("Mul", self._activation(activated), linear), kernel_out,
                                f"layer{index}_mlp_out", quantized)

        return self._outlier_rows_apart(x, block, f"layer{index}_mlp")

    def _matmul(self, x: str, kernel: np.ndarray, name: str, quantized: bool) -> str:
        if quantized:
            return self._int8_matmul(x, kernel, name)
        return self.g.op("MatMul", x, self.g.weight(kernel, f"{name}_kernel"))

    def _outlier_rows_apart(self, x: str, block, name: str) -> str:
        """``block(x, quantized)``; in the int8 form its int8 version over the rows but each row's first and last
        token (and padding), whose outlier channels would stretch the call's range, and its float32 version over
        those two (the shared writer's _int8_with_special_rows)."""
        if not self.int8:
            return block(x, False)
        return self._int8_with_special_rows(x, lambda bulk: block(bulk, True), lambda rows: block(rows, False), name)

    # --- attention -----------------------------------------------------------------------------------------------

    def _attention(self, x: str, index: int) -> str:
        """The heads' context, projected by the output matrix (its bias is left to the residual sum)."""
        g, c, w = self.g, self.config, self._w
        scope = f"encoder/layer_{index}/attention/self"
        names = ("query", "key", "value")
        kernel = np.concatenate([w(f"{scope}/{n}/kernel") for n in names], axis=1)  # [H, 3H]
        qkv = self._outlier_rows_apart(
            x, lambda h, quantized: self._matmul(h, kernel, f"layer{index}_qkv", quantized), f"layer{index}_qkv")
        if "qkv" in c.biases:
            qkv = g.op("Add", qkv, g.weight(np.concatenate([w(f"{scope}/{n}/bias") for n in names]),
                                            f"layer{index}_qkv_bias"))
        hidden = c.hidden_size
        query, key, value = g.op("Split", qkv, g.constant([hidden] * 3, np.int64), axis=-1, outputs=3,
                                 name=f"layer{index}_qkv")
        heads = g.constant([0, 0, c.num_attention_heads, c.head_size], np.int64)
        rotation = self._rotation(c.layer_rotary[index])
        query = self._rotate(g.op("Reshape", query, heads), rotation)  # [B, T, heads, d]
        key = self._rotate(g.op("Reshape", key, heads), rotation)
        window = c.window(index)
        if window:
            context = self._local_attention(query, key, g.op("Reshape", value, heads), window)
        elif self.fused:
            context = self._flash_attention(query, key, value)
        else:
            context = self._full_attention(query, key, g.op("Reshape", value, heads))
        # Its inputs have no outlier rows: int8 throughout in the int8 form, as the shared writer's.
        return self._matmul(context, w(f"encoder/layer_{index}/attention/output/dense/kernel"),
                            f"layer{index}_attention_out", self.int8)

    def _rotation(self, rotary: Rotary) -> tuple[str, str]:
        """cos and sin [1, T, 1, d] for the call's length, from tables of the longest length."""
        if rotary not in self._rotations:
            g = self.g
            cos, sin = rotary.tables(self.config.head_size, self.max_length)
            zero, axes = g.constant([0], np.int64), g.constant([0, 2], np.int64)
            self._rotations[rotary] = tuple(
                g.op("Unsqueeze", g.op("Slice", g.weight(table, f"rotary_{kind}"), zero, self._length, zero),
                     axes, name=f"rotary_{kind}") for kind, table in (("cos", cos), ("sin", sin)))
        return self._rotations[rotary]

    def _rotate(self, x: str, rotation: tuple[str, str]) -> str:
        """x cos + rotate_half(x) sin, where rotate_half(x) = (-x2, x1) for the halves x1, x2 of each head."""
        g = self.g
        cos, sin = rotation
        half = self.config.head_size // 2
        first, second = g.op("Split", x, g.constant([half, half], np.int64), axis=-1, outputs=2)
        rotated = g.op("Concat", g.op("Neg", second), first, axis=-1)
        return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))

    def _flash_attention(self, query: str, key: str, value: str) -> str:
        """MultiHeadAttention with no mask input (its flash kernel), the mask carried by one more component per
        head: q' = (q, 1), k' = (k, -10000 / scale where padded), so scale * q'.k' = scale * q.k + the mask."""
        g, c = self.g, self.config
        d = c.head_size
        scale = 1.0 / math.sqrt(d)
        last = g.constant([0, 0, 0, 0, 0, 0, 0, 1], np.int64)
        query = g.op("Pad", query, last, g.constant(1.0))  # [B, T, heads, d + 1]
        if self._key_component is None:
            component = g.op("Unsqueeze", g.op("Mul", self._key_bias, g.constant(1.0 / scale)),
                             g.constant([2, 3], np.int64))  # [B, T, 1, 1]
            self._key_component = g.op("Mul", component, g.constant(np.eye(d + 1, dtype=np.float32)[d]),
                                       name="key_mask_component")  # [B, T, 1, d + 1]
        key = g.op("Add", g.op("Pad", key, last, g.constant(0.0)), self._key_component)
        flat = g.constant([0, 0, -1], np.int64)
        return g.op("MultiHeadAttention", g.op("Reshape", query, flat), g.op("Reshape", key, flat), value,
                    domain=MICROSOFT, num_heads=c.num_attention_heads, scale=scale)

    def _full_attention(self, query: str, key: str, value: str) -> str:
        """softmax(q k^T / sqrt(d) + mask) v over [B, heads, T, T], in ai.onnx operators."""
        g, c = self.g, self.config
        if self._score_mask is None:
            self._score_mask = g.op("Unsqueeze", self._key_bias, g.constant([1, 2], np.int64),
                                    name="attention_mask")  # [B, 1, 1, T]
        query = g.op("Transpose", query, perm=[0, 2, 1, 3])
        key = g.op("Transpose", key, perm=[0, 2, 3, 1])
        value = g.op("Transpose", value, perm=[0, 2, 1, 3])
        scores = g.op("Mul", g.op("MatMul", query, key), g.constant(1.0 / math.sqrt(c.head_size)))
        probabilities = g.op("Softmax", g.op("Add", scores, self._score_mask), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probabilities, value), perm=[0, 2, 1, 3])
        return g.op("Reshape", context, g.constant([0, 0, c.hidden_size], np.int64))

    def _local_attention(self, query: str, key: str, value: str, window: int) -> str:
        """Each query sees the keys at most ``window`` positions away: queries in blocks of ``c``, each block against
        the ``c + 2 window`` keys from ``window`` before it to ``window`` after it."""
        g, c = self.g, self.config
        layout = self._window_layout(window)
        to_heads_first = [0, 2, 1, 3]
        query = g.op("Pad", g.op("Transpose", query, perm=to_heads_first), layout.query_pads)  # [B, heads, nb c, d]
        query = g.op("Reshape", query, g.constant([0, 0, -1, layout.block, c.head_size], np.int64))

        def windows(x: str) -> str:  # [B, T, heads, d] -> [B, heads, nb, c + 2w, d]
            x = g.op("Pad", g.op("Transpose", x, perm=to_heads_first), layout.key_pads)
            return g.op("Gather", x, layout.index, axis=2)

        keys = g.op("Transpose", windows(key), perm=[0, 1, 2, 4, 3])  # [B, heads, nb, d, c + 2w]
        scores = g.op("Mul", g.op("MatMul", query, keys), g.constant(1.0 / math.sqrt(c.head_size)))
        scores = g.op("Add", g.op("Add", scores, layout.band), layout.key_bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), windows(value))  # [B, heads, nb, c, d]
        context = g.op("Reshape", context, g.constant([0, 0, -1, c.head_size], np.int64))
        context = g.op("Slice", context, g.constant([0], np.int64), self._length, g.constant([2], np.int64))
        context = g.op("Transpose", context, perm=to_heads_first)
        return g.op("Reshape", context, g.constant([0, 0, c.hidden_size], np.int64))

    def _window_layout(self, window: int) -> "WindowLayout":
        """The blocks of a local layer with this half-window, shared by every layer with it."""
        if window in self._windows:
            return self._windows[window]
        g = self.g
        block = max(LOCAL_BLOCK, window)
        span = block + 2 * window
        length = g.op("Squeeze", self._length, g.constant([0], np.int64))
        blocks = g.op("Div", g.op("Add", length, g.constant(block - 1, np.int64)), g.constant(block, np.int64))
        starts = g.op("Mul", g.op("Range", g.constant(0, np.int64), blocks, g.constant(1, np.int64)),
                      g.constant(block, np.int64))
        # Block i's keys in the sequence padded by w before: positions i c .. i c + c + 2w - 1.
        index = g.op("Add", g.op("Unsqueeze", starts, g.constant([1], np.int64)),
                     g.constant(np.arange(span)[None, :], np.int64), name=f"window{window}_keys")
        padding = g.op("Unsqueeze", g.op("Sub", g.op("Mul", blocks, g.constant(block, np.int64)), length),
                       g.constant([0], np.int64))  # [nb c - T]
        after = g.op("Add", padding, g.constant([window], np.int64))
        query_pads = g.op("Concat", g.constant([0, 0, 0, 0, 0, 0], np.int64), padding, g.constant([0], np.int64),
                          axis=0)  # [B, heads, T, d]: nb c - T after
        key_pads = g.op("Concat", g.constant([0, 0, window, 0, 0, 0], np.int64), after, g.constant([0], np.int64),
                        axis=0)  # w before, nb c - T + w after
        bias_pads = g.op("Concat", g.constant([0, window, 0], np.int64), after, axis=0)  # the same on [B, T]
        key_bias = g.op("Pad", self._key_bias, bias_pads, g.constant(MASKED))  # padding positions are masked too
        key_bias = g.op("Unsqueeze", g.op("Gather", key_bias, index, axis=1), g.constant([1, 3], np.int64),
                        name=f"window{window}_key_bias")  # [B, 1, nb, 1, c + 2w]
        offsets = np.arange(span)[None, :] - np.arange(block)[:, None]  # key j of query a lies j - w - a away
        band = np.where(np.abs(offsets - window) <= window, 0.0, MASKED).astype(np.float32)  # [c, c + 2w]
        layout = WindowLayout(block=block, index=index, query_pads=query_pads, key_pads=key_pads,
                              key_bias=key_bias, band=g.constant(band))
        self._windows[window] = layout
        return layout


@dataclass(frozen=True)
class WindowLayout:
    """Graph tensors of one half-window's blocks."""

    block: int  # queries per block (c)
    index: str  # [nb, c + 2w]: each block's key positions in the padded sequence
    query_pads: str  # Pad's pads for [B, heads, T, d] queries
    key_pads: str  # for keys and values
    key_bias: str  # [B, 1, nb, 1, c + 2w]: the padding mask of each block's keys
    band: str  # [c, c + 2w]: 0 within the window, -10000 outside

