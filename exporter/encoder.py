"""The shared transformer encoder, written as ONNX from the neutral weights (weights.py) of any family.

One writer, three forms of the same arithmetic (``Form``):

- ``fused``: onnxruntime's contrib kernels for the CPU targets (embedded, onnx): EmbedLayerNormalization, Attention
  with the query, key and value projections packed into one matrix, BiasGelu/FastGelu -- the kernels onnxruntime's
  transformer optimizer rewrites a traced BERT into (the fastest CPU graph known for these models), written directly,
  so nothing depends on a pattern being recognised -- except where a standard kernel is faster: each residual is
  added before its LayerNormalization over [B * T, H] views, which onnxruntime leaves alone (over [B, T, H] it would
  fuse them into its slower SkipLayerNormalization: ``_sum_norm``). When no row of a call is padded, the attention
  runs without its mask, which lets onnxruntime take its flash kernel (``_attention_node``).
- ``standard``: ai.onnx operators only (MatMul, Softmax, LayerNormalization, Erf...), for TensorRT (-target tensorrt
  and the onnx target's --trt-accelerator), which does its own fusions and knows no com.microsoft operator.
- ``int8`` (-quantize int8): the fused form with every encoder projection an int8 matrix product (one scale per output
  channel; activations quantized per call by onnxruntime's DynamicQuantizeMatMul and MatMulIntegerToFloat; the
  attention itself stays float32). A call's range is one number for the whole activation tensor, so the writer keeps
  out of it what would stretch it for everyone:
  padding rows (masked everywhere, so zeroed before the query/key/value and the feed-forward projections) and the
  first and last real token of each row ([CLS]/<s> and [SEP]/</s>, whose states carry values ten times the others'
  in a few channels). Those two rows go through the query/key/value projection and the feed-forward block in float32
  and are written over the int8 results. On the packaged MiniLM (-pooling_layer -1) that lifts the worst cosine to
  float32 from 0.95-0.97 to 0.996, a one-word sentence padded beside long ones included (quantize.py checks every
  export); the attention-output projection, whose inputs have no outliers, needs neither.

Where only the first token of the last layer is read (a classification head, CLS_POOLED, FIRST_TOKEN), that layer is
written for the first token alone (``_first_token_layer``).

What differs between families is data in ``EncoderConfig`` (position offset, token types, MPNet's relative position
bias) and the names their module maps the weights to; the layers themselves are the same post-LN blocks. The hidden
states stay ``[B, T, H]`` throughout; the attention mask is the ``input_mask`` the graph receives (masked keys get
-10000 before the softmax, as Google's modeling.py), so a mask with holes (-mask_cls_sep) works in both forms.
"""
from __future__ import annotations

import enum
import math

import numpy as np

from .encoder_config import EncoderConfig
from .onnx_builder import FLOAT, INT64, MICROSOFT, GraphBuilder

ATTENTION_MASK_ADDER = -10000.0  # Google's modeling.py; exp() of it underflows to exactly 0 in float32


class Form(str, enum.Enum):
    STANDARD = "standard"
    FUSED = "fused"
    INT8 = "int8"


class EncoderWriter:
    """Writes the embeddings and the first ``depth`` layers; ``write`` returns each layer's output tensor."""

    def __init__(self, graph: GraphBuilder, config: EncoderConfig, weights: dict[str, np.ndarray], *, form: Form,
                 use_position_embeddings: bool = True, max_length: int | None = None):
        self.g = graph
        self.config = config
        self.weights = weights
        self.form = Form(form)
        self.fused = self.form is not Form.STANDARD
        self.int8 = self.form is Form.INT8
        self.use_position_embeddings = use_position_embeddings
        # The longest sequence the graph must take: the position table's, or any with -no_position_embeddings.
        self.max_length = max(config.max_position_embeddings, max_length or 0)
        self.rows: _Int8Rows | None = None
        self.unpadded: str | None = None

    # The last layer may be written for its first token alone (``write(first_token_only=True)``).
    trims_last_layer = True

    def write(self, input_ids: str, input_mask: str, segment_ids: str, *, depth: int,
              first_token_only: bool = False) -> list[str]:
        """With ``first_token_only`` the last layer gives its first token alone, ``[B, 1, H]``: all that a
        classification head, CLS_POOLED and FIRST_TOKEN read of it (``_first_token_layer``)."""
        x = self._embeddings(input_ids, segment_ids)
        attention_bias = self._relative_position_bias(input_ids) if self.config.relative_attention_num_buckets else None
        if self.fused:
            mask = input_mask  # Attention takes the raw [B, T] int32 mask
            if attention_bias is None:  # true when no row of the call has padding: attention without the mask
                self.unpadded = self.g.op("Greater", self.g.op("ReduceMin", input_mask, keepdims=0),
                                          self.g.constant(0, np.int32), name="unpadded")
        else:
            mask = self._additive_mask(input_mask, attention_bias)
            attention_bias = None
        if self.int8:
            self.rows = _Int8Rows(self.g, input_mask)
        layers = []
        for index in range(depth):
            if first_token_only and index == depth - 1:
                x = self._first_token_layer(x, mask, attention_bias, index)
            else:
                x = self._layer(x, mask, attention_bias, index)
            layers.append(x)
        return layers

    # --- embeddings ----------------------------------------------------------------------------------------------

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _embeddings(self, input_ids: str, segment_ids: str) -> str:
        g, c = self.g, self.config
        words = self._w("embeddings/word_embeddings")
        types = self.weights.get("embeddings/token_type_embeddings")
        if self.fused and not c.token_types and types is not None:
            # The model adds its token type 0 to every token (RoBERTa): folded into the word table, in the order
            # transformers adds them (word + type, then position), so the sums are the same floats.
            words, types = words + types[0], None
        if not c.token_types and not self.fused:
            # TensorRT drops inputs nothing reads, and Triton's config names all three: the standard form reads
            # segment_ids (all zeros from the bridge) through the model's type table, or a zero row.
            types = types if types is not None else np.zeros((1, c.hidden_size), np.float32)
        positions = None
        if self.use_position_embeddings:
            positions = self._w("embeddings/position_embeddings")[c.position_offset:]
        gamma, beta = self._w("embeddings/LayerNorm/gamma"), self._w("embeddings/LayerNorm/beta")
        if self.fused and positions is not None:
            return g.op("EmbedLayerNormalization", input_ids, segment_ids if types is not None else None,
                        g.weight(words, "word_embeddings"), g.weight(positions, "position_embeddings"),
                        g.weight(types, "token_type_embeddings") if types is not None else None,
                        g.weight(gamma, "embeddings_ln_gamma"), g.weight(beta, "embeddings_ln_beta"),
                        domain=MICROSOFT, epsilon=c.layer_norm_eps, name="embeddings", outputs=2)[0]
        x = g.op("Gather", g.weight(words, "word_embeddings"), input_ids, name="word_embedding")
        if types is not None:
            if not c.token_types:  # every token reads row 0, whatever segment ids a client sent (a pair's 1s)
                segment_ids = g.op("Min", segment_ids, g.constant(0, np.int32), name="ignored_segment_ids")
            x = g.op("Add", x, g.op("Gather", g.weight(types, "token_type_embeddings"), segment_ids,
                                    name="token_type_embedding"))
        if positions is not None:
            length = g.op("Shape", input_ids, start=1, end=2, name="sequence_length")
            table = g.op("Slice", g.weight(positions, "position_embeddings"), g.constant([0], np.int64), length,
                         g.constant([0], np.int64), name="position_embedding")
            x = g.op("Add", x, table)
        return self._layer_norm(x, gamma, beta, "embeddings_ln")

    def _layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, scope: str) -> str:
        return self.g.op("LayerNormalization", x, self.g.weight(gamma, f"{scope}_gamma"),
                         self.g.weight(beta, f"{scope}_beta"), axis=-1, epsilon=self.config.layer_norm_eps,
                         name=scope)

    # --- attention masks and biases ------------------------------------------------------------------------------

    def _additive_mask(self, input_mask: str, attention_bias: str | None) -> str:
        """[B, 1, 1, T]: 0 where the mask is 1, -10000 where it is 0 (plus MPNet's [1, heads, T, T] bias)."""
        g = self.g
        mask = g.op("Cast", input_mask, to=FLOAT, name="mask_float")
        adder = g.op("Mul", g.op("Sub", g.constant(1.0), mask), g.constant(ATTENTION_MASK_ADDER))
        adder = g.op("Unsqueeze", adder, g.constant([1, 2], np.int64), name="attention_mask")
        return g.op("Add", adder, attention_bias, name="attention_bias") if attention_bias else adder

    def _relative_position_bias(self, input_ids: str) -> str:
        """MPNet's bias [1, heads, T, T]: a learned value per head and bucket of the distance key - query, the same
        in every layer. The bias per distance is tabulated here; the graph gathers it for the call's length."""
        g, c = self.g, self.config
        longest = self.max_length
        distances = np.arange(-(longest - 1), longest)  # key - query
        buckets = relative_position_buckets(distances, c.relative_attention_num_buckets,
                                            c.relative_attention_max_distance)
        by_distance = self._w("encoder/relative_attention_bias")[buckets]  # [2 * longest - 1, heads]
        length = g.op("Shape", input_ids, start=1, end=2)
        positions = g.op("Range", g.constant(0, np.int64), g.op("Squeeze", length, g.constant([0], np.int64)),
                         g.constant(1, np.int64))
        keys = g.op("Unsqueeze", positions, g.constant([0], np.int64))
        queries = g.op("Unsqueeze", positions, g.constant([1], np.int64))
        index = g.op("Add", g.op("Sub", keys, queries), g.constant(longest - 1, np.int64))  # [T, T]
        values = g.op("Gather", g.weight(by_distance, "relative_attention_bias"), index)  # [T, T, heads]
        values = g.op("Transpose", values, perm=[2, 0, 1])
        return g.op("Unsqueeze", values, g.constant([0], np.int64), name="relative_position_bias")

    # --- layers --------------------------------------------------------------------------------------------------

    def _layer(self, x: str, mask: str, attention_bias: str | None, index: int) -> str:
        scope = f"encoder/layer_{index}"
        context = self._self_attention(x, mask, attention_bias, f"{scope}/attention/self", index)
        x = self._residual_norm(context, x, f"{scope}/attention/output", f"layer{index}_attention")
        if self.int8:
            return self._int8_feed_forward(x, scope, index)
        inner = self._dense_activation(x, f"{scope}/intermediate/dense", f"layer{index}_intermediate")
        return self._residual_norm(inner, x, f"{scope}/output", f"layer{index}_output")

    def _self_attention(self, x: str, mask: str, attention_bias: str | None, scope: str, index: int) -> str:
        """The heads' context vectors, merged back to [B, T, H] (before the output projection)."""
        g = self.g
        if self.fused:  # query, key and value packed: [H, 3H]
            kernel, bias = self._packed(scope, ("query", "key", "value"))
            if self.int8:
                return self._attend(*self._int8_projections(x, kernel, bias, ("query", "key", "value"), index),
                                    mask, attention_bias, index)
            return self._attention_node("Attention", [x, g.weight(kernel, f"layer{index}_qkv_kernel"),
                                                      g.weight(bias, f"layer{index}_qkv_bias"), mask, None,
                                                      attention_bias], 3, f"layer{index}_attention")
        query, key, value = (self._linear(x, f"{scope}/{n}", f"layer{index}_{n}") for n in ("query", "key", "value"))
        return self._attend(query, key, value, mask, None, index)

    def _first_token_layer(self, x: str, mask: str, attention_bias: str | None, index: int) -> str:
        """The layer's output for the first token alone, [B, 1, H]: every token's key and value, then the first
        token's query, attention, projections and norms -- the same arithmetic as its row of ``_layer``, for about a
        sixth of that layer's work. After the keys and values, that one row goes through float32 in every form (int8
        would not pay for itself on one row)."""
        g, c = self.g, self.config
        scope = f"encoder/layer_{index}"
        attention = f"{scope}/attention/self"
        zero, one = g.constant([0], np.int64), g.constant([1], np.int64)
        first = g.op("Slice", x, zero, one, one, name=f"layer{index}_first_token")  # [B, 1, H]
        query = self._linear(first, f"{attention}/query", f"layer{index}_query")
        if self.int8:
            key, value = self._int8_projections(x, *self._packed(attention, ("key", "value")), ("key", "value"), index)
        else:
            key, value = (self._linear(x, f"{attention}/{n}", f"layer{index}_{n}") for n in ("key", "value"))
        if attention_bias is not None:  # MPNet's [1, heads, T, T]: the first query's row
            attention_bias = g.op("Slice", attention_bias, zero, one, g.constant([2], np.int64),
                                  name=f"layer{index}_first_bias")
        elif not self.fused and c.relative_attention_num_buckets:  # the standard form's mask carries it
            mask = g.op("Slice", mask, zero, one, g.constant([2], np.int64), name=f"layer{index}_first_mask")
        context = self._attend(query, key, value, mask, attention_bias, index)
        x = self._residual_norm(context, first, f"{scope}/attention/output", f"layer{index}_attention",
                                float32=True)
        inner = self._dense_activation(x, f"{scope}/intermediate/dense", f"layer{index}_intermediate")
        return self._residual_norm(inner, x, f"{scope}/output", f"layer{index}_output", float32=True)

    def _packed(self, scope: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The kernels and biases of ``scope``'s projections ``names``, side by side: [H, len(names) H], one product."""
        return (np.concatenate([self._w(f"{scope}/{n}/kernel") for n in names], axis=1),
                np.concatenate([self._w(f"{scope}/{n}/bias") for n in names]))

    def _linear(self, x: str, scope: str, name: str) -> str:
        g, w = self.g, self._w
        return g.op("Add", g.op("MatMul", x, g.weight(w(f"{scope}/kernel"), f"{name}_kernel")),
                    g.weight(w(f"{scope}/bias"), f"{name}_bias"))

    def _attend(self, query: str, key: str, value: str, mask: str, attention_bias: str | None, index: int) -> str:
        """softmax(q k^T / sqrt(d) + mask) v per head, [B, Tq, H] from projected [B, T, H] tensors: onnxruntime's
        MultiHeadAttention in the fused forms, ai.onnx operators in the standard one (``mask`` additive there)."""
        g, c = self.g, self.config
        if self.fused:
            return self._attention_node("MultiHeadAttention", [query, key, value, None, mask, attention_bias], 4,
                                        f"layer{index}_attention")
        heads = g.constant([0, 0, c.num_attention_heads, c.head_size], np.int64)
        query = g.op("Transpose", g.op("Reshape", query, heads), perm=[0, 2, 1, 3])  # [B, heads, Tq, d]
        key = g.op("Transpose", g.op("Reshape", key, heads), perm=[0, 2, 3, 1])  # [B, heads, d, T]
        value = g.op("Transpose", g.op("Reshape", value, heads), perm=[0, 2, 1, 3])
        scores = g.op("Mul", g.op("MatMul", query, key), g.constant(1.0 / math.sqrt(c.head_size)))
        probabilities = g.op("Softmax", g.op("Add", scores, mask), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probabilities, value), perm=[0, 2, 1, 3])
        return g.op("Reshape", context, g.constant([0, 0, c.hidden_size], np.int64), name=f"layer{index}_context")

    def _attention_node(self, op_type: str, inputs: list[str | None], mask_input: int, name: str) -> str:
        """onnxruntime's ``op_type`` (Attention or MultiHeadAttention) over ``inputs``, whose ``mask_input`` is the
        mask; when no row of the call has padding, the same node without the mask (``If``). MultiHeadAttention's
        CPU kernel then runs its flash kernel: 1.3x faster at MiniLM's 51 x 40, and Attention's 1.06x. A batch of
        sentences that all reach max_seq_len (long ones, truncated) is such a call."""
        g = self.g

        def node(graph: GraphBuilder, mask: str | None) -> str:
            node_inputs = [*inputs[:mask_input], mask, *inputs[mask_input + 1:]]
            return graph.op(op_type, *node_inputs, domain=MICROSOFT, num_heads=self.config.num_attention_heads,
                            mask_filter_value=ATTENTION_MASK_ADDER, name=name)

        if self.unpadded is None:
            return node(g, inputs[mask_input])
        return g.choose(self.unpadded, lambda branch: node(branch, None),
                        lambda branch: node(branch, inputs[mask_input]), name=f"{name}_if_unpadded")

    def _residual_norm(self, x: str, residual: str, scope: str, name: str, *, float32: bool = False) -> str:
        """LayerNorm(x @ kernel + bias + residual) with ``scope``'s dense and LayerNorm weights; int8 in the int8
        form unless ``float32``."""
        g, w = self.g, self._w
        if self.int8 and not float32:  # the bias added by the int8 product itself
            projected = self._int8_matmul(x, w(f"{scope}/dense/kernel"), name, bias=w(f"{scope}/dense/bias"))
            return self._sum_norm([projected, residual], scope, name)
        projected = g.op("MatMul", x, g.weight(w(f"{scope}/dense/kernel"), f"{name}_kernel"))
        bias = g.weight(w(f"{scope}/dense/bias"), f"{name}_bias")
        return self._sum_norm([projected, residual], scope, name, bias=bias)

    def _sum_norm(self, terms: list[str], scope: str, name: str, *, bias: str | None = None) -> str:
        """LayerNorm(sum of the [B, T, H] ``terms`` + ``bias``). The fused forms add over [B * T, H] views of them:
        over [B, T, H], onnxruntime fuses an Add before a LayerNormalization into SkipLayerNormalization, whose CPU
        kernel took 1.8 ms where Add and LayerNormalization over [B * T, H] take 0.43 ms (Sum, which it does not
        fuse, 0.65 ms; MiniLM's 2,000 x 384, two threads)."""
        g, w = self.g, self._w
        gamma, beta = w(f"{scope}/LayerNorm/gamma"), w(f"{scope}/LayerNorm/beta")
        if self.fused:
            shape = g.op("Shape", terms[0])
            terms = [g.op("Reshape", term, g.constant([-1, self.config.hidden_size], np.int64)) for term in terms]
        total = terms[0] if bias is None else g.op("Add", terms[0], bias)
        for term in terms[1:]:
            total = g.op("Add", total, term, name=f"{name}_sum")
        normed = self._layer_norm(total, gamma, beta, f"{name}_ln")
        return g.op("Reshape", normed, shape) if self.fused else normed

    def _dense_activation(self, x: str, scope: str, name: str) -> str:
        """activation(x @ kernel + bias) with ``scope``'s dense weights."""
        g, w = self.g, self._w
        projected = g.op("MatMul", x, g.weight(w(f"{scope}/kernel"), f"{name}_kernel"))
        return self._activation(projected, g.weight(w(f"{scope}/bias"), f"{name}_bias"))

    def _activation(self, x: str, bias: str | None = None) -> str:
        """activation(x + bias). The fused forms add a bias inside onnxruntime's BiasGelu/FastGelu; without one (the
        int8 product adds it) they use Gelu, 1.5x faster than BiasGelu (MiniLM's 2,040 x 1,536, two threads)."""
        g, kind = self.g, self.config.hidden_act
        if self.fused and bias is not None and kind in ("gelu", "gelu_tanh"):
            return g.op("BiasGelu" if kind == "gelu" else "FastGelu", x, bias, domain=MICROSOFT)
        if bias is not None:
            x = g.op("Add", x, bias)
        if self.fused and kind in FUSED_ACTIVATIONS:
            op_type, attributes = FUSED_ACTIVATIONS[kind]
            return g.op(op_type, x, domain=MICROSOFT, **attributes)
        return activation(g, x, kind)

    # --- int8 ----------------------------------------------------------------------------------------------------

    def _int8_matmul(self, x: str, kernel: np.ndarray, name: str, *, bias: np.ndarray | None = None) -> str:
        """x @ kernel (+ bias) with int8 weights, one scale per output channel; x quantized per call."""
        g = self.g
        quantized, scales = quantize_columns(kernel)
        return g.op("DynamicQuantizeMatMul", x, g.weight(quantized, f"{name}_kernel_int8"),
                    g.weight(scales, f"{name}_kernel_scale"),
                    g.weight(np.zeros(kernel.shape[1], np.int8), f"{name}_kernel_zero_point"),
                    g.weight(bias, f"{name}_bias") if bias is not None else None, domain=MICROSOFT,
                    name=f"{name}_int8")

    def _int8_projections(self, x: str, kernel: np.ndarray, bias: np.ndarray, labels: tuple[str, ...],
                          index: int) -> list[str]:
        """x @ kernel + bias in int8, one product per label's columns of the packed ``kernel``, all from one quantized
        input; each row's first and last token in float32 (one packed product, split by label)."""
        g, width = self.g, self.config.hidden_size
        name = f"layer{index}_{''.join(label[0] for label in labels)}"
        bulk = g.op("Mul", x, self.rows.bulk, name=f"{name}_bulk")
        x_int8, x_scale, x_zero_point = g.op("DynamicQuantizeLinear", bulk, outputs=3, name=f"{name}_quantized")
        rows = g.op("GatherND", x, self.rows.special, name=f"{name}_special_rows")
        special = g.op("Add", g.op("MatMul", rows, g.weight(kernel, f"{name}_kernel")), g.weight(bias, f"{name}_bias"))
        special = g.op("Split", special, g.constant([width] * len(labels), np.int64), axis=-1, outputs=len(labels))
        projections = []
        for part, (label, special_rows) in enumerate(zip(labels, special)):
            columns = slice(part * width, (part + 1) * width)
            quantized, scales = quantize_columns(kernel[:, columns])
            projection = g.op("MatMulIntegerToFloat", x_int8,
                              g.weight(quantized, f"layer{index}_{label}_kernel_int8"), x_scale,
                              g.weight(scales, f"layer{index}_{label}_kernel_scale"), x_zero_point,
                              g.weight(np.zeros(width, np.int8), f"layer{index}_{label}_kernel_zero_point"),
                              g.weight(bias[columns], f"layer{index}_{label}_bias"), domain=MICROSOFT)
            projections.append(g.op("ScatterND", projection, self.rows.special, special_rows,
                                    name=f"layer{index}_{label}_rows"))
        return projections

    def _int8_feed_forward(self, x: str, scope: str, index: int) -> str:
        """LayerNorm(x + FFN(x)): int8 for the bulk of the tokens, float32 for each row's first and last."""
        g, w = self.g, self._w
        name = f"layer{index}"
        inner, output = f"{scope}/intermediate/dense", f"{scope}/output/dense"

        def int8(bulk: str) -> str:
            hidden = self._int8_matmul(bulk, w(f"{inner}/kernel"), f"{name}_intermediate", bias=w(f"{inner}/bias"))
            hidden = self._activation(hidden)
            return self._int8_matmul(hidden, w(f"{output}/kernel"), f"{name}_output", bias=w(f"{output}/bias"))

        def fp32(rows: str) -> str:
            hidden = self._dense_activation(rows, inner, f"{name}_special_intermediate")
            hidden = g.op("MatMul", hidden, g.weight(w(f"{output}/kernel"), f"{name}_output_kernel"))
            return g.op("Add", hidden, g.weight(w(f"{output}/bias"), f"{name}_output_bias"))

        out = self._int8_with_special_rows(x, int8, fp32, f"{name}_feed_forward")
        return self._sum_norm([out, x], f"{scope}/output", f"{name}_output")

    def _int8_with_special_rows(self, x: str, int8, fp32, name: str) -> str:
        """``int8`` over x with padding, first and last token zeroed (out of the ranges), its rows for those two tokens
        replaced by ``fp32`` over them."""
        g = self.g
        bulk = g.op("Mul", x, self.rows.bulk, name=f"{name}_bulk")
        special = fp32(g.op("GatherND", x, self.rows.special, name=f"{name}_special_rows"))  # [B, 2, N]
        return g.op("ScatterND", int8(bulk), self.rows.special, special, name=f"{name}_rows")


# onnxruntime's kernels for an activation without a bias in the fused forms: exact Gelu (erf), FastGelu (tanh),
# QuickGelu with alpha 1, which is x * sigmoid(x) (SiLU).
FUSED_ACTIVATIONS = {"gelu": ("Gelu", {}), "gelu_tanh": ("FastGelu", {}), "silu": ("QuickGelu", {"alpha": 1.0})}


def activation(g: GraphBuilder, x: str, kind: str) -> str:
    """gelu (erf), gelu_tanh, silu, relu, tanh, sigmoid or identity, in ai.onnx operators."""
    if kind == "gelu":
        erf = g.op("Erf", g.op("Mul", x, g.constant(1.0 / math.sqrt(2.0))))
        return g.op("Mul", g.op("Mul", x, g.constant(0.5)), g.op("Add", erf, g.constant(1.0)))
    if kind == "gelu_tanh":
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Mul", g.op("Add", x, g.op("Mul", cube, g.constant(0.044715))),
                     g.constant(math.sqrt(2.0 / math.pi)))
        return g.op("Mul", g.op("Mul", x, g.constant(0.5)), g.op("Add", g.op("Tanh", inner), g.constant(1.0)))
    if kind == "silu":
        return g.op("Mul", x, g.op("Sigmoid", x))
    if kind == "relu":
        return g.op("Relu", x)
    if kind == "tanh":
        return g.op("Tanh", x)
    if kind == "sigmoid":
        return g.op("Sigmoid", x)
    if kind == "identity":
        return x
    raise AssertionError(f"unhandled activation {kind!r}")


def relative_position_buckets(distances: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """MPNet's (and T5's bidirectional) bucket of each distance key - query, computed in float32 as transformers'
    MPNetEncoder.relative_position_bucket computes it, so the boundaries fall on the same distances."""
    half = num_buckets // 2
    n = -np.asarray(distances, dtype=np.int64)
    buckets = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = (np.log(n.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
                  * np.float32(half - max_exact))
    large = max_exact + np.where(n < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return buckets + np.where(n < max_exact, n, large)


class _Int8Rows:
    """Per call, once: which rows the int8 ranges see. ``bulk`` [B, T, 1] is 1 on the real tokens but each row's
    first and last; ``special`` [B, 2, 2] indexes those two tokens (row, position)."""

    def __init__(self, g: GraphBuilder, input_mask: str):
        mask = g.op("Cast", input_mask, to=FLOAT, name="int8_rows_mask")
        last = g.op("Sub", reduce_sum(g, g.op("Cast", input_mask, to=INT64), axis=1), g.constant(1, np.int64))
        last = g.op("Max", last, g.constant(0, np.int64), name="int8_rows_last")  # [B, 1]
        shape = g.op("Shape", input_mask)
        length = g.op("Gather", shape, g.constant(1, np.int64))
        positions = g.op("Range", g.constant(0, np.int64), length, g.constant(1, np.int64))  # [T]
        inner = g.op("And", g.op("Greater", positions, g.constant(0, np.int64)),
                     g.op("Not", g.op("Equal", g.op("Unsqueeze", positions, g.constant([0], np.int64)), last)))
        bulk = g.op("Mul", mask, g.op("Cast", inner, to=FLOAT))
        self.bulk = g.op("Unsqueeze", bulk, g.constant([-1], np.int64), name="int8_rows_bulk")
        first_and_last = g.op("Concat", g.op("Mul", last, g.constant(0, np.int64)), last, axis=1)  # [B, 2]
        rows = g.op("Range", g.constant(0, np.int64), g.op("Gather", shape, g.constant(0, np.int64)),
                    g.constant(1, np.int64))
        rows = g.op("Expand", g.op("Unsqueeze", rows, g.constant([1], np.int64)), g.op("Shape", first_and_last))
        self.special = g.op("Concat", g.op("Unsqueeze", rows, g.constant([-1], np.int64)),
                            g.op("Unsqueeze", first_and_last, g.constant([-1], np.int64)), axis=-1,
                            name="int8_rows_special")


def reduce_sum(g: GraphBuilder, x: str, *, axis: int) -> str:
    return g.op("ReduceSum", x, g.constant([axis], np.int64), keepdims=1)


def quantize_columns(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column): q = round(w / s) in [-127, 127], s = max |w| / 127."""
    scales = np.maximum(np.abs(kernel).max(axis=0), 1e-30) / 127.0
    quantized = np.clip(np.rint(kernel / scales), -127, 127).astype(np.int8)
    return quantized, scales.astype(np.float32)
