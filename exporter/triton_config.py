"""``config.pbtxt`` for every target, built as a ``ModelConfig`` protobuf and printed with ``text_format``.

What goes in (DESIGN.md decision 2 and 4, triton-notes.md): the three INT32 inputs and the ``encodes`` output by name,
``max_batch_size`` (batch dim implicit), a dynamic batcher without priority levels, and instance groups from
``-num_worker`` / ``-device_map`` / ``-cpu``. No priority levels: with them, Triton 2.51's batcher left the model idle
about 0.5 s between queued requests of different shapes -- which length-adaptive padding sends all the time -- so a
mixed-length request ran at half speed and one sentence in ten waited half a second (docs/PERFORMANCE.md). Small
requests are put first in the bridge instead (bridge/core/scheduler.py), which also keeps few chunks queued in Triton.
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from .manifest import INPUT_NAMES, OUTPUT_NAME, Target
from .options import ExportOptions

CONFIG_FILE = "config.pbtxt"
TRT_ENGINE_CACHE = "/tmp/triton_trt_cache"  # on the server: engines survive model reloads
TRT_OPT_BATCH = 32  # the optimum of TensorRT profiles: a typical full batch from the bridge
# The embedded target's slices of a large request, in token positions per onnxruntime call (templates/model.py):
# int8 kernels want larger calls than fp32 ones (on a 2-core Zen 4 at 40 tokens: int8 473 sentences/s at 2,048
# positions against 392 at 512; fp32 219 at 2,048 against 238 at 512). docs/PERFORMANCE.md has the sweep.
POSITIONS_PER_RUN = {None: 1024, "int8": 2048}

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


def tensorrt_profile(options: ExportOptions) -> dict[str, tuple[tuple[int, int], ...]]:
    """(min, opt, max) shape per input: any batch 1..max_batch_size, any length 1..max_seq_len (the bridge pads to it).

    Used for the tensorrt target's plan and for the onnx target's TensorRT accelerator, so that one engine covers
    every request instead of one engine being built per new shape.
    """
    length = options.max_seq_len
    shapes = ((1, 1), (min(TRT_OPT_BATCH, options.max_batch_size), length), (options.max_batch_size, length))
    return {name: shapes for name in INPUT_NAMES}


def _profile_parameter(profile: dict, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shapes[which]))}" for name, shapes in profile.items())


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
        "dynamic_batching": {},
        "instance_group": instance_groups(options),
    }
    if options.target is Target.EMBEDDED:
        config["parameters"] = {"positions_per_run": {"string_value": str(POSITIONS_PER_RUN[options.quantize])}}
    if options.trt_accelerator:
        parameters = {"precision_mode": "FP16", "trt_engine_cache_enable": "1",
                      "trt_engine_cache_path": TRT_ENGINE_CACHE}
        if options.max_seq_len is not None:
            profile = tensorrt_profile(options)
            for which, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
                parameters[key] = _profile_parameter(profile, which)
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": parameters}]}}
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def render(config: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def read_as_dict(model_folder) -> dict:
    """A model folder's config.pbtxt in Triton's JSON form (protobuf field names), e.g. for a load-time override."""
    text = (Path(model_folder) / CONFIG_FILE).read_text()
    return json_format.MessageToDict(parse(text), preserving_proto_field_name=True)
