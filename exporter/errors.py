"""The exporter's closed set of errors, and the one place where third-party errors are translated into it.

Every failure a user can cause (a missing file, a config that is not BERT, an option that does not fit the model, a
target this machine cannot build) is an ``ExportError``; the CLI prints it as one line and exits with status 2.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator

__all__ = [
    "ExportError",
    "SourceError",
    "OptionError",
    "ConversionError",
    "TargetUnavailableError",
    "ExportInterrupted",
    "QuantizationError",
    "translate_errors",
]


class ExportError(Exception):
    """Base of every error the exporter reports to its user."""


class SourceError(ExportError):
    """The model folder or checkpoint cannot be read as a BERT: missing files, a foreign config, absent tensors."""


class OptionError(ExportError):
    """An option is invalid by itself or does not fit the model (e.g. a pooling layer out of range)."""


class ConversionError(ExportError):
    """Writing the ONNX model (or the TensorRT plan, or the SavedModel) produced no usable model."""


class QuantizationError(ExportError):
    """The quantized model strays too far from the fp32 one (-quantize's accuracy check)."""


class TargetUnavailableError(ExportError):
    """The requested target needs something this machine lacks (TensorRT, a GPU)."""


class ExportInterrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped the export; raised by the CLI's signal handler.

    A KeyboardInterrupt rather than an ExportError, so that no library's ``except Exception`` on the way swallows it
    before the export removes its staging folder.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")


@contextlib.contextmanager
def translate_errors(stage: str, into: type[ExportError] = SourceError) -> Iterator[None]:
    """Turn the third-party errors a user's input can provoke into ``into``, naming the stage.

    The orchestrator wraps each step in this, so translation happens here and nowhere else. Programming errors
    (TypeError, AttributeError, ...) from our own code pass through untouched so that bugs keep their traceback.
    """
    try:
        yield
    except ExportError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise into(f"{stage}: {e}") from e
    except Exception as e:  # noqa: BLE001 - narrowed below by module of origin, re-raised otherwise
        origin = type(e).__module__.split(".")[0]
        if origin in {"tensorflow", "safetensors", "google", "torch", "onnx", "onnxruntime", "tensorrt"}:
            raise into(f"{stage}: {type(e).__name__}: {_first_line(e)}") from e
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
