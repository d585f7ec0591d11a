"""TensorFlow ``BertEncoder`` -> ONNX with tf2onnx, verified by running the result in onnxruntime.

tf2onnx logs unsupported ops and still returns a model (``continue_on_error``), so a conversion only counts when
onnxruntime loads the file, its tensors carry our names, and it reproduces the TensorFlow output on a probe batch.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from .errors import ConversionError
from .manifest import INPUT_NAMES, OUTPUT_NAME

log = logging.getLogger(__name__)

CATCH_ERRORS_VARIABLE = "TF2ONNX_CATCH_ERRORS"
# Relative to the largest output. fp32 kernels of TF and onnxruntime differ by ~1e-6; two float16 casts of nearly equal
# float32 values may land one float16 step (2**-10 relative) apart.
PROBE_TOLERANCE = 1e-4
PROBE_TOLERANCE_FP16 = 4e-3


def to_onnx(encoder, path: Path, *, opset: int) -> Path:
    import tf2onnx

    from .graph import input_signature

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The input signature is passed explicitly so the ONNX inputs carry the argument names (feed by name).
    with _quiet_tf2onnx(), _optimizer_errors_raise():
        model_proto, _ = tf2onnx.convert.from_function(encoder.encode, input_signature=input_signature(), opset=opset)
    # tf2onnx names axes unk__N; give them names that say what they are.
    for tensor in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = tensor.type.tensor_type.shape.dim
        for dim, label in zip(dims, ("batch", "sequence")):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    path.write_bytes(model_proto.SerializeToString())
    verify(encoder, path)
    return path


def verify(encoder, path: Path) -> None:
    """Loads ``path`` in onnxruntime and compares it with the TensorFlow graph on a small probe batch."""
    import onnxruntime as ort

    # An unloadable model raises onnxruntime's own error here; the orchestrator's translate_errors names it.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = sorted(i.name for i in session.get_inputs())
    outputs = [o.name for o in session.get_outputs()]
    if names != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise ConversionError(f"converted model has inputs {names} and outputs {outputs}, "
                              f"expected {sorted(INPUT_NAMES)} and {[OUTPUT_NAME]}")
    feeds = probe_batch(vocab_size=encoder.config.vocab_size, type_vocab_size=encoder.config.type_vocab_size)
    expected = encoder.encode(**feeds)[OUTPUT_NAME].numpy().astype(np.float32)
    actual = session.run([OUTPUT_NAME], feeds)[0].astype(np.float32)
    scale = max(1.0, float(np.abs(expected).max()))
    difference = float(np.abs(actual - expected).max()) / scale
    tolerance = PROBE_TOLERANCE_FP16 if encoder.output_dtype.name == "float16" else PROBE_TOLERANCE
    if actual.shape != expected.shape or not difference <= tolerance:
        raise ConversionError(f"converted model disagrees with TensorFlow on a probe batch "
                              f"(shape {actual.shape} vs {expected.shape}, relative difference {difference:.2e})")
    log.debug("ONNX matches TensorFlow on the probe batch (relative difference %.1e)", difference)


def probe_batch(*, vocab_size: int, type_vocab_size: int) -> dict[str, np.ndarray]:
    """Two rows of different real lengths, [CLS]-like first token, padding at the end, both segments."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab_size, size=(2, 7), dtype=np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=np.int32)
    segments = np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=np.int32)
    return {"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments * int(type_vocab_size > 1)}


@contextlib.contextmanager
def _optimizer_errors_raise():
    """Let tf2onnx's graph optimizers raise instead of deep-copying the graph before each pass to roll back.

    The copies cost about a third of the conversion time (tens of seconds for a 6-layer model), and a failing
    optimizer should stop the export anyway. tf2onnx reads this switch from the environment only, and any value
    turns catching off (convert.py compares the variable's name, not its value); it is restored afterwards.
    """
    previous = os.environ.get(CATCH_ERRORS_VARIABLE)
    os.environ[CATCH_ERRORS_VARIABLE] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CATCH_ERRORS_VARIABLE, None)
        else:
            os.environ[CATCH_ERRORS_VARIABLE] = previous


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx logs every optimizer pass at INFO; keep its WARNINGs (unsupported ops) and above."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
