"""Orchestrates one export: options -> source (config and weights of the model's family) -> ONNX -> the target's
model folder.

The folder is assembled in a hidden staging folder beside it and moved into place at the end, so a model folder
with a manifest is always complete (the bridge treats a manifest as "already exported"); staging.py owns that folder.
The output is checked (by creating the staging folder) before the model is read, so a bad -output fails at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from .errors import ConversionError, OptionError, translate_errors
from .head_source import task_of
from .manifest import VOCAB_FILE, ExportManifest, Target
from .options import ExportOptions
from .tokenizer_files import TOKENIZER_CONFIG, TOKENIZER_FILE
from .source import ModelSource, read_source
from .staging import create_staging, move_into_place, remove_own_staging, remove_stale_staging, signals_held

__all__ = ["ExportOptions", "export_model", "build_manifest"]

log = logging.getLogger(__name__)


def export_model(options: ExportOptions) -> Path:
    """Writes ``options.output / options.name`` and returns that folder."""
    from . import targets

    if options.target is Target.TENSORRT:
        targets.check_tensorrt_available()
    repository_is_new = not options.output.exists()
    try:
        folder = _export_into(_prepare_output(options), options)
    except BaseException:  # an error, or an interrupting signal (cli.py): nothing partial may stay behind
        remove_own_staging(options.output, options.name)
        if repository_is_new:
            with contextlib.suppress(OSError):
                options.output.rmdir()  # only if still empty
        raise
    log.info("wrote %s", folder)
    return folder


def _prepare_output(options: ExportOptions) -> Path:
    """Create the repository if needed, clear what killed exports left there, and return a new staging folder."""
    output = options.output
    if output.exists() and not output.is_dir():
        raise OptionError(f"-output {output} is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(output, options.name)
        return create_staging(output, options.name)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and Path(e.filename) != output else ""
        raise OptionError(f"cannot write to -output {output}: {e.strerror or e}{where}") from e


def _export_into(staging: Path, options: ExportOptions) -> Path:
    from . import targets

    _import_extension_modules(options)
    log.info("reading %s (weights from %s)", options.model_dir, options.weights_dir)
    with translate_errors("reading the model"):
        source = read_source(options)
    options.check_fits(source.config)
    if source.tokenizer and source.tokenizer.lowercases and options.cased_tokenization:
        raise OptionError(f"-cased_tokenization: the {source.config.model_type} model's own tokenizer lower-cases "
                          f"({TOKENIZER_CONFIG}'s do_lower_case); drop -cased_tokenization")

    manifest = build_manifest(options, source)
    targets.write_frame(staging, options=options, manifest=manifest, vocab=source.vocab)
    from .build import target_form, write_onnx

    output = (f"its {options.head['kind']} head ({task_of(options.head)}, {options.head['width']} outputs)"
              if options.head else f"{options.pooling_strategy.name} over layers {list(options.pooling_layer)}")
    log.info("building the graph: %s, %d layers, hidden %d, %s", source.config.model_type,
             source.config.num_hidden_layers, source.config.hidden_size, output)
    log.info("converting the weights to ONNX (%s form, opset %d) and checking it in onnxruntime",
             target_form(options).value, options.opset)
    with translate_errors("writing the ONNX model", into=ConversionError):
        write_onnx(source.config, source.weights, options, targets.onnx_path(staging))
    if options.quantize:
        manifest = _quantize(staging, options, manifest, source)
    log.info("writing the %s target", options.target.value)
    with translate_errors(f"writing the {options.target.value} target", into=ConversionError):
        targets.write_runtime_files(staging, options=options, source=source)
    return move_into_place(staging, options.model_folder)


def _import_extension_modules(options: ExportOptions) -> None:
    """The compiled modules this export uses load with interrupting signals held (delivered right after): a signal
    that lands while an extension module initializes can abort the process (onnx's nanobind) or come out as that
    module's ImportError, instead of unwinding the export and removing its staging folder."""
    from .weights import checkpoint_exists

    with signals_held():
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import safetensors.numpy  # noqa: F401
        import tokenizers  # noqa: F401

        if options.target is Target.SAVEDMODEL or checkpoint_exists(options.weights_dir, options.ckpt_name):
            import tensorflow  # noqa: F401


def _quantize(staging: Path, options: ExportOptions, manifest: ExportManifest, source: ModelSource) -> ExportManifest:
    from . import targets
    from .build import build_onnx
    from .encoder import Form
    from .quantize import quantize_int8, tokenizer_json_encoder, wordpiece_encoder

    log.info("writing the int8 form and checking it against fp32")
    if manifest.vocab_file:  # BERT: the exported vocabulary, as the bridge tokenizes by default
        encode = wordpiece_encoder(staging / manifest.vocab_file, manifest.do_lower_case)
    else:  # the model's own tokenizer as the bridge runs it, with the special tokens its post-processor adds
        encode = tokenizer_json_encoder(staging / manifest.tokenizer_file)
    with translate_errors("quantizing the ONNX model", into=ConversionError):
        worst = quantize_int8(targets.onnx_path(staging),
                              build_int8=lambda: build_onnx(source.config, source.weights, options, form=Form.INT8),
                              encode=encode, max_seq_len=options.max_seq_len,
                              min_cosine=options.quantize_min_cosine, force=options.force_quantize)
    manifest = dataclasses.replace(manifest, extra={**manifest.extra, "quantize_worst_cosine": worst,
                                                    "quantize_min_cosine": options.quantize_min_cosine})
    manifest.save(staging)
    return manifest


def build_manifest(options: ExportOptions, source: ModelSource) -> ExportManifest:
    tokenizer = source.tokenizer  # the family's own (None: BERT's vocab.txt and the original's tokenization)
    return ExportManifest(
        target=options.target.value,
        pooling_strategy=options.pooling_strategy.name,
        pooling_layer=options.pooling_layer,
        max_seq_len=options.max_seq_len,
        # A family's own tokenizer lower-cases or not; AUTO set cased_tokenization as sentence-transformers does.
        do_lower_case=(tokenizer.lowercases if tokenizer and not options.sentence_transformers
                       else options.do_lower_case),
        mask_cls_sep=options.mask_cls_sep,
        output_dim=options.output_dim(source.config),
        output_dtype="float16" if options.fp16 else "float32",
        max_batch_size=options.max_batch_size,
        max_position_embeddings=source.config.max_position_embeddings,
        hidden_size=source.config.hidden_size,
        num_hidden_layers=source.config.num_hidden_layers,
        source=source.weights_path,
        no_position_embeddings=options.no_position_embeddings,
        priority_batch_size=options.priority_batch_size,
        normalize=options.normalize,
        vocab_file=VOCAB_FILE if source.vocab is not None else None,
        # AUTO and heads serve the model's own semantics, every family but BERT its own tokenization: the model's
        # own tokenizer
        tokenizer_file=TOKENIZER_FILE if options.sentence_transformers or options.head or tokenizer else None,
        special_tokens=tokenizer.special_tokens if tokenizer else None,
        pair_separators=tokenizer.pair_separators if tokenizer else 1,
        sentence_transformers=options.sentence_transformers,
        quantize=options.quantize,
        model_type=source.config.model_type,
        token_types=source.config.token_types,
        task=task_of(options.head),
        labels=options.head["labels"] if options.head and "labels" in options.head else None,
        activation=(options.head or {}).get("score_activation"),
        head=options.head,
        extra={
            "config": str(source.config_path),
            "vocab_size": len(source.vocab) if source.vocab is not None else tokenizer.vocab_size,
            "opset": options.opset,
            "trt_accelerator": options.trt_accelerator,
        },
    )

