"""``bert-export``: the command line, with the original bert-serving-start flag names.

Single-dash long options (``-model_dir``) as the original's argparse had them, double-dash forms too. ``-pooling_layer``
and ``-device_map`` take several values like argparse's ``nargs='+'`` (``-pooling_layer -4 -3 -2 -1``), which click
cannot express; ``main`` folds such runs of integers into one comma-separated value before click parses.
Heavy modules (tensorflow, onnx, onnxruntime) load inside the command body, so ``--help`` is instant.
Every user error ends as one line ``bert-export: error: ...`` and exit status 2. SIGINT, SIGTERM and SIGHUP stop an
export cleanly: its staging folder is removed and it exits with one line and status 128 + the signal's number.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

import click

from .errors import ExportError, ExportInterrupted
from .manifest import PoolingStrategy, Target, parse_max_seq_len
from .options import DEFAULT_CKPT_NAME, DEFAULT_CONFIG_NAME, packaged_model_dir
from .staging import INTERRUPTING_SIGNALS

PROG = "bert-export"
LIST_OPTIONS = ("-pooling_layer", "--pooling_layer", "-device_map", "--device_map")
INTEGER = re.compile(r"^-?\d+$")
AUTO = "AUTO"  # sentence_transformers.AUTO, without importing that module for --help
STRATEGIES = [s.name for s in PoolingStrategy] + ["CLS_TOKEN", "SEP_TOKEN", AUTO]


def fold_list_options(args: list[str]) -> list[str]:
    """``-pooling_layer -4 -3 -2 -1`` -> ``-pooling_layer -4,-3,-2,-1`` (argparse nargs='+' semantics)."""
    folded, index = [], 0
    while index < len(args):
        folded.append(args[index])
        if args[index] in LIST_OPTIONS:
            values = []
            while index + 1 < len(args) and INTEGER.match(args[index + 1]):
                index += 1
                values.append(args[index])
            if values:
                folded.append(",".join(values))
        index += 1
    return folded


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(item) for item in value.split(",") if item.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers, got {value!r}") from None


def _max_seq_len(ctx, param, value):
    try:
        return parse_max_seq_len(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _strategy(ctx, param, value):
    if value.strip().upper() == AUTO:
        return AUTO
    try:
        return PoolingStrategy.parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def option(name: str, **kwargs):
    """``-name`` and ``--name`` for the same parameter."""
    return click.option(f"-{name}", f"--{name}", name, **kwargs)


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@option("model_dir", type=click.Path(path_type=Path), default=None,
        help="BERT folder: Google (bert_config.json, vocab.txt, bert_model.ckpt.*) or Hugging Face (config.json, "
             "vocab.txt, model.safetensors). Default: the packaged all-MiniLM-L6-v2.")
@option("tuned_model_dir", type=click.Path(path_type=Path), default=None,
        help="Fine-tuned weights (Google checkpoint or HF folder); config and vocab still come from -model_dir.")
@option("ckpt_name", default=DEFAULT_CKPT_NAME, show_default=True, help="Checkpoint prefix of a Google model.")
@option("config_name", default=DEFAULT_CONFIG_NAME, show_default=True,
        help="Config file in -model_dir (config.json is used when it is absent).")
@option("pooling_strategy", default="REDUCE_MEAN", show_default=True, callback=_strategy, metavar="NAME",
        help=f"One of {', '.join(STRATEGIES)}. AUTO: what a sentence-transformers folder says (its pooling, the "
             "last layer, its max_seq_length, Normalize, its tokenizer).")
@option("pooling_layer", default="-2", show_default=True, callback=_int_list, metavar="N [N ...]",
        help="Encoder layer(s) to pool, e.g. -pooling_layer -4 -3 -2 -1 (concatenated in that order).")
@option("mask_cls_sep", is_flag=True, help="The bridge masks [CLS] and [SEP] out of attention and pooling.")
@option("no_position_embeddings", is_flag=True, help="Do not add position embeddings.")
@option("max_seq_len", default="25", show_default=True, callback=_max_seq_len, metavar="INT|NONE",
        help="Sequence length the bridge pads to: an integer > 3, or NONE for dynamic length.")
@option("fp16", is_flag=True, help="Output float16 vectors.")
@option("normalize", is_flag=True, help="L2-normalize each output vector (each token's with NONE) in the graph.")
@option("cased_tokenization", is_flag=True, help="Tokenize without lower-casing (cased models).")
@option("num_worker", type=int, default=1, show_default=True, help="Model instances (Triton instance_group count).")
@option("device_map", default=None, callback=_int_list, metavar="ID [ID ...]",
        help="GPU ids, e.g. -device_map 0 1; workers go round-robin.")
@option("cpu", is_flag=True, help="Run the model instances on CPU (KIND_CPU).")
@option("max_batch_size", type=int, default=256, show_default=True, help="Triton max_batch_size.")
@option("priority_batch_size", type=int, default=16, show_default=True,
        help="Requests up to this many sequences get Triton priority 1.")
@option("target", type=click.Choice([t.value for t in Target], case_sensitive=False), default=Target.EMBEDDED.value,
        show_default=True, help="embedded: python backend + onnxruntime (the bundled tritonserver); onnx: "
                                "onnxruntime_onnx; tensorrt: model.plan (GPU); savedmodel: tensorflow_savedmodel.")
@option("output", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True,
        help="Triton model repository to write into.")
@option("name", default="bert", show_default=True, help="Model name (its folder in the repository).")
@click.option("--trt-accelerator", "-trt_accelerator", "trt_accelerator", is_flag=True,
              help="onnx target: switch on onnxruntime's TensorRT execution accelerator with FP16.")
@option("quantize", type=click.Choice(["int8"]), default=None,
        help="Write the int8 form of the graph (int8 weights per channel, activations quantized per call); refused "
             "when its worst cosine to fp32 on a built-in multilingual set is below -quantize_min_cosine.")
@option("quantize_min_cosine", type=float, default=0.99, show_default=True,
        help="The accuracy -quantize must keep.")
@option("force_quantize", is_flag=True, help="Keep the quantized model even below -quantize_min_cosine.")
@click.option("--opset", "-opset", "opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--verbose", "-verbose", "verbose", is_flag=True, help="More detail on stderr.")
@click.version_option(None, "-version", "--version", package_name="bert-serving-triton", prog_name=PROG,
                      message="%(prog)s %(version)s", help="Print the version and exit.")
def command(*, model_dir, verbose, **flags):
    """Export a BERT with its pooling into a Triton model repository (REPO/NAME/)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is not progress
    _log_to_stderr(verbose)
    from .export import export_model
    from .options import ExportOptions

    if model_dir is None:
        model_dir = packaged_model_dir()
    flags["device_map"] = flags["device_map"] or ()
    if flags["pooling_strategy"] == AUTO:
        flags = _resolve_auto(model_dir, flags)
    options = ExportOptions(model_dir=model_dir, **flags)
    try:
        with _interrupted_by_signals():
            folder = export_model(options)
    except ExportInterrupted as e:  # handled here: click would turn any KeyboardInterrupt into a bare Abort
        return fail(f"{e}; the partial export was removed", status=128 + e.signum)
    click.echo(str(folder))


def _resolve_auto(model_dir: Path, flags: dict) -> dict:
    from .encoder_config import read_config
    from .sentence_transformers import resolve_auto
    from .source import config_path

    context = click.get_current_context()
    explicit = frozenset(name for name in flags
                         if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE)
    config = read_config(config_path(model_dir, flags["config_name"]))
    return resolve_auto(model_dir, config, flags, explicit=explicit)


@contextlib.contextmanager
def _interrupted_by_signals():
    """SIGINT, SIGTERM and SIGHUP (Ctrl-C, systemd, docker stop, a closed terminal) raise ExportInterrupted, so the
    export unwinds and removes its staging folder instead of dying with it in the repository."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum, frame):
        for sig in INTERRUPTING_SIGNALS:  # one interruption: the cleanup that follows runs undisturbed
            signal.signal(sig, signal.SIG_IGN)
        raise ExportInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_to_stderr(verbose: bool) -> None:
    """Progress lines ``bert-export: ...`` on stderr; stdout carries only the model folder."""
    logger = logging.getLogger("bert_exporter")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(getattr(h, "name", None) == PROG for h in logger.handlers):  # main() may run twice in one process
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(PROG)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        logger.addHandler(handler)


def fail(message: str, status: int = 2) -> int:
    text = " ".join(message.split())  # one line, whatever the message held
    with contextlib.suppress(OSError):  # stderr may be a pipe whose reader was killed with us
        click.echo(f"{PROG}: error: {text}", err=True)
    return status


def _unknown_option(reported: str, args: list[str]) -> str:
    """click reads an unknown ``-no_such_flag`` as the short option ``-n``; name the argument the user typed."""
    typed = [arg.split("=", 1)[0] for arg in args if arg.startswith(reported)]
    return typed[0] if typed else reported


def main(argv: list[str] | None = None) -> int:
    args = fold_list_options(list(sys.argv[1:] if argv is None else argv))
    try:
        status = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.NoSuchOption as e:
        status = fail(f"no such option: {_unknown_option(e.option_name, args)}")
    except click.ClickException as e:
        status = fail(e.format_message())
    except click.Abort:
        status = fail("aborted")
    except ExportError as e:
        status = fail(str(e))
    status = status if isinstance(status, int) else 0
    if argv is None:
        sys.exit(status)
    return status


if __name__ == "__main__":
    main()
