"""The two forms the ONNX writer emits (exporter/encoder.py): the fused one (onnxruntime's contrib kernels, for the CPU
targets) and the standard one (ai.onnx operators only, for TensorRT) compute the same vectors, both equal to
transformers, and each holds only the operators its runtime knows.
"""
from __future__ import annotations

import numpy as np
import pytest
from export_oracle import TINY, assert_close, make_batch, mask_cls_sep, original_pooling, reference

from bert_exporter.build import build_onnx, target_form
from bert_exporter.encoder import Form
from bert_exporter.encoder_config import read_config
from bert_exporter.export import ExportOptions
from bert_exporter.families import family_for

CASES = [
    dict(pooling_strategy="REDUCE_MEAN_MAX", pooling_layer=[-4, -3, -2, -1]),
    dict(pooling_strategy="NONE", pooling_layer=[-1], max_seq_len=None),
    dict(pooling_strategy="LAST_TOKEN", pooling_layer=[-2], normalize=True),
    dict(pooling_strategy="CLS_POOLED", fp16=True),
]


@pytest.fixture(scope="module")
def tiny_weights(tiny_hf):
    config = read_config(tiny_hf.model_dir / "config.json")
    weights, _ = family_for("bert").read_weights(tiny_hf.model_dir, config=config, ckpt_name="bert_model.ckpt")
    return config, weights


def run(model, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], feeds)[0].astype(np.float32)


def expected(oracle, feeds: dict, options: ExportOptions) -> np.ndarray:
    pooled = original_pooling(reference(oracle, feeds), feeds["input_mask"], options.pooling_strategy.name,
                              list(options.pooling_layer))
    if options.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


def batch(padded: bool) -> dict:
    """Rows of 12, 7 and 4 tokens with holes (-mask_cls_sep), or three rows of 12 without padding: the fused form's
    attention then runs without its mask (exporter/encoder.py, _attention_node)."""
    if padded:
        return mask_cls_sep(make_batch([12, 7, 4], 12, vocab_size=TINY["vocab_size"], seed=3))
    feeds = make_batch([12, 12, 12], 12, vocab_size=TINY["vocab_size"], seed=3)
    assert feeds["input_mask"].all()
    return feeds


def all_nodes(graph):
    """The graph's nodes and those of its subgraphs (an If's branches)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from all_nodes(attribute.g)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case["pooling_strategy"])
def test_fused_and_standard_forms_agree_with_transformers(tiny_hf, tiny_weights, case, padded, tmp_path):
    config, weights = tiny_weights
    options = ExportOptions(model_dir=tiny_hf.model_dir, output=tmp_path, **case)
    feeds = batch(padded)
    fused = run(build_onnx(config, weights, options, form=Form.FUSED), feeds)
    standard = run(build_onnx(config, weights, options, form=Form.STANDARD), feeds)
    truth = expected(tiny_hf.oracle, feeds, options)
    tolerance = np.abs(truth).max() * 2e-3 if options.fp16 else 1e-4
    assert_close(fused, truth, tolerance)
    assert_close(standard, truth, tolerance)
    assert_close(fused, standard, tolerance)


def test_each_form_holds_only_what_its_runtime_knows(tiny_hf, tiny_weights, tmp_path):
    config, weights = tiny_weights
    options = ExportOptions(model_dir=tiny_hf.model_dir, output=tmp_path)
    fused = build_onnx(config, weights, options, form=Form.FUSED)
    standard = build_onnx(config, weights, options, form=Form.STANDARD)
    assert {n.domain for n in standard.graph.node} == {""}, "TensorRT parses ai.onnx operators only"
    contrib = {n.op_type for n in all_nodes(fused.graph) if n.domain == "com.microsoft"}
    assert contrib == {"EmbedLayerNormalization", "Attention", "BiasGelu"}
    # Layers past the pooled one (-2 of 4) are not in the graph; each layer's Attention is there with its mask and
    # without it (for calls without padding), one If choosing.
    layers = TINY["num_hidden_layers"] - 1
    attention = [n for n in all_nodes(fused.graph) if n.op_type == "Attention"]
    assert sorted(len([i for i in n.input if i]) for n in attention) == [3] * layers + [4] * layers
    assert sum(n.op_type == "If" for n in fused.graph.node) == layers
    int8 = build_onnx(config, weights, options, form=Form.INT8)
    assert not {"MatMul"} & {n.op_type for n in int8.graph.node if any("kernel_int8" in i for i in n.input)}
    assert sum(n.op_type == "DynamicQuantizeMatMul" for n in int8.graph.node) == 3 * (TINY["num_hidden_layers"] - 1)
    # Every graph input is read in the standard form (TensorRT drops unread inputs, Triton's config names all three).
    read = {name for node in standard.graph.node for name in node.input}
    assert {"input_ids", "input_mask", "segment_ids"} <= read


@pytest.mark.parametrize(("target", "trt_accelerator", "form"), [
    ("embedded", False, Form.FUSED), ("onnx", False, Form.FUSED), ("onnx", True, Form.STANDARD),
    ("tensorrt", False, Form.STANDARD)])
def test_the_target_chooses_the_form(tmp_path, target, trt_accelerator, form):
    options = ExportOptions(model_dir=tmp_path, output=tmp_path, target=target, trt_accelerator=trt_accelerator)
    assert target_form(options) is form


@pytest.mark.parametrize("form", list(Form))
@pytest.mark.parametrize(("case", "first_token_only"), [
    (dict(pooling_strategy="CLS_POOLED"), True),
    (dict(pooling_strategy="FIRST_TOKEN", pooling_layer=[-3, -2]), True),
    (dict(pooling_strategy="REDUCE_MEAN", pooling_layer=[-2]), False),
], ids=["CLS_POOLED", "FIRST_TOKEN", "REDUCE_MEAN"])
def test_what_reads_the_first_token_alone_gets_the_last_layer_for_it_alone(tiny_hf, tiny_weights, form, case,
                                                                          first_token_only, tmp_path):
    """The deepest layer written computes one row per input where only its first token is read (a fraction of that
    layer's work: exporter/encoder.py, _first_token_layer), every row where the pooling reads them all. Its values
    are the transformers comparisons above (CLS_POOLED, and FIRST_TOKEN in tests/families)."""
    import onnx
    import onnxruntime as ort

    config, weights = tiny_weights
    options = ExportOptions(model_dir=tiny_hf.model_dir, output=tmp_path, **case)
    model = build_onnx(config, weights, options, form=form)
    depth = TINY["num_hidden_layers"] if case["pooling_strategy"] == "CLS_POOLED" else TINY["num_hidden_layers"] - 1
    deepest = f"layer{depth - 1}_output_ln"
    (norm,) = [node for node in model.graph.node if node.name == deepest]
    output = norm.output[0]
    # The fused forms normalize a [B * T, H] view, shaped back by the Reshape after it.
    output = next((n.output[0] for n in model.graph.node if n.op_type == "Reshape" and n.input[0] == output), output)
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    feeds = make_batch([12, 7, 4], 12, vocab_size=TINY["vocab_size"], seed=3)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    layer = session.run([output], feeds)[0]
    assert layer.shape == (3, 1 if first_token_only else 12, TINY["hidden_size"])


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("case", CASES[:3] + [dict(pooling_strategy="CLS_POOLED")],
                         ids=lambda case: case["pooling_strategy"])
def test_the_int8_form_stays_close_to_fp32(tiny_hf, tiny_weights, case, padded, tmp_path):
    """Its first and last tokens in float32, the rest in int8: rows with holes (-mask_cls_sep) and padding, and rows
    without padding."""
    config, weights = tiny_weights
    options = ExportOptions(model_dir=tiny_hf.model_dir, output=tmp_path, **case)
    feeds = batch(padded)
    fp32 = run(build_onnx(config, weights, options, form=Form.FUSED), feeds)
    int8 = run(build_onnx(config, weights, options, form=Form.INT8), feeds)
    assert fp32.shape == int8.shape
    real = feeds["input_mask"].astype(bool) if fp32.ndim == 3 else slice(None)
    a, b = fp32[real], int8[real]
    assert ((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min() >= 0.99
    assert np.abs(a - b).max() > 1e-6
