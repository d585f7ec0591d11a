"""Writes one Triton model folder per target.

Every target gets the same frame (``config.pbtxt``, ``bert_export.json``, the tokenizer's files, ``1/model.onnx``) and
adds what its runtime loads: ``1/model.py`` (embedded: python backend running onnxruntime), ``1/model.plan`` (tensorrt,
built from the ONNX file), ``1/model.savedmodel/`` (savedmodel: BERT's TensorFlow graph, graph.py, checked against
the ONNX model on a probe batch).
"""
from __future__ import annotations

import ctypes
import importlib.resources
import importlib.util
import logging
from pathlib import Path
from typing import Optional

from .errors import ConversionError, TargetUnavailableError
from .manifest import OUTPUT_NAME, ExportManifest, Target
from .options import ExportOptions
from .triton_config import CONFIG_FILE, model_config, render, tensorrt_profile

log = logging.getLogger(__name__)

VERSION = "1"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
SAVEDMODEL_DIR = "model.savedmodel"
EMBEDDED_TEMPLATE = "model.py"
# The SavedModel against the ONNX model, relative to the largest output: fp32 kernels of TensorFlow and onnxruntime
# differ by ~1e-6; two float16 casts of nearly equal float32 values may land one float16 step (2**-10) apart.
PROBE_TOLERANCE = 1e-4
PROBE_TOLERANCE_FP16 = 4e-3


def write_frame(folder: Path, *, options: ExportOptions, manifest: ExportManifest,
                vocab: Optional[list[str]]) -> None:
    """The files every target shares, except the model itself."""
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(render(model_config(options, output_dim=manifest.output_dim)))
    if manifest.vocab_file:
        (folder / manifest.vocab_file).write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    if manifest.tokenizer_file:
        from .tokenizer_files import write_tokenizer

        # sentence-transformers' do_lower_case: a Lowercase before the tokenizer's own normalizer (heads: none)
        write_tokenizer(options.model_dir, folder / manifest.tokenizer_file, model_type=manifest.model_type,
                        lowercase_first=bool((manifest.sentence_transformers or {}).get("do_lower_case")), vocab=vocab)
    manifest.save(folder)


def onnx_path(folder: Path) -> Path:
    return folder / VERSION / ONNX_FILE


def write_runtime_files(folder: Path, *, options: ExportOptions, source) -> None:
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
        write_savedmodel(source, options, version / SAVEDMODEL_DIR, onnx_file=onnx_path(folder))
    elif options.target is Target.TENSORRT:
        build_plan(onnx_path(folder), version / PLAN_FILE, options=options)


def write_savedmodel(source, options: ExportOptions, path: Path, *, onnx_file: Path) -> None:
    """BERT's TensorFlow graph (graph.py) as a SavedModel, refused unless it agrees with ``onnx_file``."""
    import tensorflow as tf

    from .graph import BertEncoder

    encoder = BertEncoder(config=source.config, weights=source.weights, strategy=options.pooling_strategy,
                          pooling_layer=options.pooling_layer,
                          use_position_embeddings=not options.no_position_embeddings, fp16=options.fp16,
                          normalize=options.normalize,
                          dense_activations=[layer["activation"] for layer in
                                             (options.sentence_transformers or {}).get("dense", ())])
    check_savedmodel(encoder, onnx_file)
    # Triton's TF backend maps tensors through the serving signature: inputs by argument name, output by dict key.
    tf.saved_model.save(encoder, str(path), signatures={"serving_default": encoder.encode.get_concrete_function()})


def check_savedmodel(encoder, onnx_file: Path) -> None:
    """The TensorFlow graph and the ONNX model give the same vectors on a probe batch."""
    import numpy as np
    import onnxruntime as ort

    from .build import probe_batch

    feeds = probe_batch(encoder.config)
    expected = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(
        [OUTPUT_NAME], feeds)[0].astype(np.float32)
    actual = encoder.encode(**feeds)[OUTPUT_NAME].numpy().astype(np.float32)
    scale = max(1.0, float(np.abs(expected).max()))
    difference = float(np.abs(actual - expected).max()) / scale if actual.shape == expected.shape else np.inf
    tolerance = PROBE_TOLERANCE_FP16 if encoder.output_dtype.name == "float16" else PROBE_TOLERANCE
    if not difference <= tolerance:
        raise ConversionError(f"the SavedModel disagrees with the ONNX model on a probe batch "
                              f"(shape {actual.shape} vs {expected.shape}, relative difference {difference:.2e})")


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
    if not parser.parse_from_file(str(onnx_file)):  # from the file: large models keep weights in model.onnx.data
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
