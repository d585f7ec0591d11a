"""Unit tests of ExportOptions validation and of config.pbtxt generation (no model, no conversion)."""
from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2

from bert_exporter.errors import OptionError
from bert_exporter.manifest import PoolingStrategy, Target
from bert_exporter.options import ExportOptions
from bert_exporter.triton_config import model_config, parse, render

KIND = model_config_pb2.ModelInstanceGroup


def options(**kwargs) -> ExportOptions:
    return ExportOptions(model_dir="model", output="repo", **kwargs)


def test_defaults_follow_the_original():
    o = options()
    assert (o.pooling_strategy, o.pooling_layer, o.max_seq_len) == (PoolingStrategy.REDUCE_MEAN, (-2,), 25)
    assert (o.max_batch_size, o.priority_batch_size, o.num_worker) == (256, 16, 1)
    assert (o.target, o.name, o.ckpt_name, o.config_name) == (Target.EMBEDDED, "bert", "bert_model.ckpt",
                                                              "bert_config.json")
    assert o.do_lower_case and o.weights_dir == o.model_dir


def test_values_are_normalised():
    o = options(pooling_strategy="sep_token", pooling_layer=[-1, "-3"], target="onnx", device_map=["1"],
                tuned_model_dir="tuned")
    assert (o.pooling_strategy, o.pooling_layer, o.target, o.device_map) == (PoolingStrategy.LAST_TOKEN, (-1, -3),
                                                                             Target.ONNX, (1,))
    assert str(o.weights_dir) == "tuned"
    with pytest.raises(Exception):
        o.name = "other"  # frozen


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"pooling_strategy": "AVERAGE"}, "unknown pooling strategy"),
    ({"pooling_layer": []}, "at least one"),
    ({"max_seq_len": 3}, "> 3"),
    ({"num_worker": 0}, "-num_worker"),
    ({"max_batch_size": 0}, "-max_batch_size"),
    ({"device_map": [-1]}, "-device_map"),
    ({"name": "a/b"}, "-name"),
    ({"target": "tflite"}, "unknown target"),
    ({"target": "tensorrt", "max_seq_len": None}, "fixed -max_seq_len"),
    ({"target": "tensorrt", "cpu": True}, "GPUs only"),
    ({"trt_accelerator": True}, "-target onnx"),
])
def test_invalid_options(kwargs, fragment):
    with pytest.raises(OptionError, match=fragment):
        options(**kwargs)


def groups(config):
    return [(g.kind, g.count, list(g.gpus)) for g in config.instance_group]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"target": "embedded", "num_worker": 2, "device_map": [0]}, [(KIND.KIND_CPU, 2, [])]),
    ({"target": "onnx", "cpu": True, "num_worker": 3}, [(KIND.KIND_CPU, 3, [])]),
    ({"target": "onnx"}, [(KIND.KIND_AUTO, 1, [])]),
    ({"target": "tensorrt", "num_worker": 2}, [(KIND.KIND_GPU, 2, [])]),
    ({"target": "onnx", "num_worker": 5, "device_map": [3, 1]}, [(KIND.KIND_GPU, 3, [3]), (KIND.KIND_GPU, 2, [1])]),
    ({"target": "onnx", "num_worker": 1, "device_map": [0, 1]}, [(KIND.KIND_GPU, 1, [0])]),
])
def test_instance_groups(kwargs, expected):
    assert groups(parse(render(model_config(options(**kwargs), output_dim=8)))) == expected


@pytest.mark.parametrize(("target", "runtime", "filename"), [
    ("embedded", ("backend", "python"), "model.py"),
    ("onnx", ("platform", "onnxruntime_onnx"), "model.onnx"),
    ("tensorrt", ("platform", "tensorrt_plan"), "model.plan"),
    ("savedmodel", ("platform", "tensorflow_savedmodel"), "model.savedmodel"),
])
def test_each_target_names_its_runtime(target, runtime, filename):
    config = parse(render(model_config(options(target=target, name="m", max_batch_size=32), output_dim=768)))
    field, value = runtime
    assert getattr(config, field) == value and config.default_model_filename == filename
    assert (config.name, config.max_batch_size) == ("m", 32)
    assert [list(o.dims) for o in config.output] == [[768]]
    assert config.HasField("dynamic_batching") and config.dynamic_batching.priority_levels == 0


def test_token_output_and_fp16():
    config = parse(render(model_config(options(pooling_strategy="NONE", fp16=True), output_dim=384)))
    (output,) = config.output
    assert (list(output.dims), output.data_type) == ([-1, 384], model_config_pb2.TYPE_FP16)


def test_tensorrt_accelerator_profile_covers_the_bridge_shapes():
    config = parse(render(model_config(options(target="onnx", trt_accelerator=True, max_seq_len=64,
                                               max_batch_size=128), output_dim=8)))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    p = accelerator.parameters
    assert (accelerator.name, p["precision_mode"], p["trt_engine_cache_enable"]) == ("tensorrt", "FP16", "1")
    assert p["trt_profile_min_shapes"] == "input_ids:1x1,input_mask:1x1,segment_ids:1x1"
    assert p["trt_profile_max_shapes"] == "input_ids:128x64,input_mask:128x64,segment_ids:128x64"
    dynamic = parse(render(model_config(options(target="onnx", trt_accelerator=True, max_seq_len=None), output_dim=8)))
    (accelerator,) = dynamic.optimization.execution_accelerators.gpu_execution_accelerator
    assert "trt_profile_max_shapes" not in accelerator.parameters
