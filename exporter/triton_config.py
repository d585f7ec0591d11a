"""``config.pbtxt`` for every target, built as a ``ModelConfig`` protobuf and printed with ``text_format``.

What goes in (DESIGN.md decision 2 and 4, triton-notes.md): the three INT32 inputs and the ``encodes`` output by name,
``max_batch_size`` (batch dim implicit), a dynamic batcher with two priority levels (the bridge sends priority 1 for
requests up to ``priority_batch_size``, everything else gets the default level 2), and instance groups from
``-num_worker`` / ``-device_map`` / ``-cpu``.
"""
from __future__ import annotations

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from .manifest import INPUT_NAMES, OUTPUT_NAME, Target
from .options import ExportOptions

CONFIG_FILE = "config.pbtxt"
PRIORITY_LEVELS = 2
DEFAULT_PRIORITY_LEVEL = 2

# How Triton knows which runtime to use for each target.
RUNTIME = {
    Target.EMBEDDED: {"backend": "python"},
    Target.ONNX: {"platform": "onnxruntime_onnx"},
    Target.TENSORRT: {"platform": "tensorrt_plan"},
    Target.SAVEDMODEL: {"platform": "tensorflow_savedmodel"},
}
DEFAULT_MODEL_FILENAME = {
    Target.EMBEDDED: "model.py",
    Target.ONNX: "model.onnx",
    Target.TENSORRT: "model.plan",
    Target.SAVEDMODEL: "model.savedmodel",
}


def instance_groups(options: ExportOptions) -> list[dict]:
    """-num_worker workers, spread over -device_map round-robin as the original did; KIND_CPU for -cpu/embedded."""
    if options.cpu or options.target is Target.EMBEDDED:
        return [{"count": options.num_worker, "kind": "KIND_CPU"}]
    if options.device_map:
        groups = []
        for position, gpu in enumerate(options.device_map):
            count = len(range(position, options.num_worker, len(options.device_map)))
            if count:
                groups.append({"count": count, "kind": "KIND_GPU", "gpus": [gpu]})
        return groups
    # No GPUs named: tensorrt needs a GPU; the others take one when the server has it, else run on CPU.
    kind = "KIND_GPU" if options.target is Target.TENSORRT else "KIND_AUTO"
    return [{"count": options.num_worker, "kind": kind}]


def model_config(options: ExportOptions, *, output_dim: int) -> model_config_pb2.ModelConfig:
    output_dims = [-1, output_dim] if options.pooling_strategy.name == "NONE" else [output_dim]
    config = {
        "name": options.name,
        **RUNTIME[options.target],
        "default_model_filename": DEFAULT_MODEL_FILENAME[options.target],
        "max_batch_size": options.max_batch_size,
        "input": [{"name": name, "data_type": "TYPE_INT32", "dims": [-1]} for name in INPUT_NAMES],
        "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP16" if options.fp16 else "TYPE_FP32",
                    "dims": output_dims}],
        "dynamic_batching": {"priority_levels": PRIORITY_LEVELS, "default_priority_level": DEFAULT_PRIORITY_LEVEL},
        "instance_group": instance_groups(options),
    }
    if options.trt_accelerator:
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt",
            "parameters": {"precision_mode": "FP16", "trt_engine_cache_enable": "1",
                           "trt_engine_cache_path": "/tmp/triton_trt_cache"},
        }]}}
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def render(config: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())
