"""Writes one Triton model folder per target.

Every target gets the same frame (``config.pbtxt``, ``bert_export.json``, ``vocab.txt``, ``1/model.onnx``) and adds
what its runtime loads: ``1/model.py`` (embedded: python backend running onnxruntime), ``1/model.plan`` (tensorrt,
built from the ONNX file), ``1/model.savedmodel/`` (savedmodel, the same tf.function).
"""
from __future__ import annotations

import ctypes
import importlib.resources
import importlib.util
import logging
from pathlib import Path

from .errors import ConversionError, TargetUnavailableError
from .manifest import VOCAB_FILE, ExportManifest, Target
from .options import ExportOptions
from .triton_config import CONFIG_FILE, model_config, render, tensorrt_profile

log = logging.getLogger(__name__)

VERSION = "1"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
SAVEDMODEL_DIR = "model.savedmodel"
EMBEDDED_TEMPLATE = "model.py"


def write_frame(folder: Path, *, options: ExportOptions, manifest: ExportManifest, vocab: list[str]) -> None:
    """The files every target shares, except the model itself."""
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(render(model_config(options, output_dim=manifest.output_dim)))
    (folder / VOCAB_FILE).write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    if manifest.tokenizer_file:
        from .sentence_transformers import write_tokenizer

        write_tokenizer(options.model_dir, folder / manifest.tokenizer_file, vocab=vocab,
                        do_lower_case=manifest.sentence_transformers["do_lower_case"])
    manifest.save(folder)


def onnx_path(folder: Path) -> Path:
    return folder / VERSION / ONNX_FILE


def write_runtime_files(folder: Path, *, options: ExportOptions, encoder) -> None:
    """What the target's runtime loads next to ``model.onnx`` (already written)."""
    version = folder / VERSION
    if options.target is Target.EMBEDDED:
        template = importlib.resources.files("bert_exporter").joinpath("templates", EMBEDDED_TEMPLATE)
        (version / EMBEDDED_TEMPLATE).write_text(template.read_text())
        # Triton's python backend imports model.py in an isolated interpreter (PYTHONDONTWRITEBYTECODE is ignored)
        # and would write __pycache__/ into the repository: a plain file of that name makes Python skip the cache.
        (version / "__pycache__").write_text("A file, not a folder: keeps Python from writing bytecode caches into "
                                             "this model repository (written by bert-export).\n")
    elif options.target is Target.SAVEDMODEL:
        write_savedmodel(encoder, version / SAVEDMODEL_DIR)
    elif options.target is Target.TENSORRT:
        build_plan(onnx_path(folder), version / PLAN_FILE, options=options)


def write_savedmodel(encoder, path: Path) -> None:
    import tensorflow as tf

    # Triton's TF backend maps tensors through the serving signature: inputs by argument name, output by dict key.
    tf.saved_model.save(encoder, str(path), signatures={"serving_default": encoder.encode.get_concrete_function()})


# --- TensorRT ------------------------------------------------------------------------------------------------------

def check_tensorrt_available() -> None:
    """Fails fast, before any conversion, when this machine cannot build a TensorRT plan."""
    if importlib.util.find_spec("tensorrt") is None:
        raise TargetUnavailableError(
            "-target tensorrt needs the TensorRT Python package and a GPU; export -target onnx here and build the plan "
            "on a GPU host (docs/EXPORT.md)")
    if cuda_device_count() == 0:
        raise TargetUnavailableError(
            "-target tensorrt needs a GPU (no CUDA device found); export -target onnx here and build the plan on a GPU "
            "host (docs/EXPORT.md)")


def cuda_device_count() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def build_plan(onnx_file: Path, plan_file: Path, *, options: ExportOptions) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_file.read_bytes()):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse {onnx_file}: {problems}")
    config = builder.create_builder_config()
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (minimum, optimum, maximum) in tensorrt_profile(options).items():
        profile.set_shape(name, minimum, optimum, maximum)
    config.add_optimization_profile(profile)
    log.info("building the TensorRT plan (minutes on large models)")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ConversionError("TensorRT could not build an engine from the ONNX model (see its log above)")
    plan_file.write_bytes(bytes(plan))
