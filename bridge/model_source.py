"""Which exported models the bridge serves, and the one place where settings recorded at export meet the CLI flags.

Each ``-model_dir`` is either a folder written by bert-export (it has bert_export.json) or a source BERT folder
(Google checkpoint or Hugging Face), as the original accepted. A source folder -- or none, meaning the packaged
default -- is exported on the fly by running bert-export into a cache, keyed by the source files, the flags that shape
the graph and the exporter's own code, so an unchanged start reuses it. ``--model-repository`` adds the models a
folder of bert-export output holds. ``settle_models`` turns all of them into the config's ``ModelSpec``s.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bert_exporter.errors import ExportError
from bert_exporter.head_source import is_classifier
from bert_exporter.manifest import MANIFEST_FILE, ExportManifest, PoolingStrategy, Target
from bert_exporter.options import packaged_model_dir

from . import child_process
from .cache_admin import claim_cache_entry, drop_cache_entry
from .config import (AUTO_STRATEGY, EXPORT_FLAGS, MODEL_FLAGS, MODEL_NAME_RE, PACKAGED_MODEL_NAME, ModelSpec,
                     ServerConfig)
from .errors import StartupError

log = logging.getLogger("bert_bridge.model")

EXPORT_NAME = "bert"  # the model's folder in the cache entry of an export on the fly


@dataclass(frozen=True)
class UnservedModel:
    """A model of a whole --model-repository that cannot be served, and why (one line): reported, not fatal."""

    name: str
    folder: Path
    reason: str


@dataclass(frozen=True)
class ServedModel:
    """An export on disk: ``repository/name`` (bert-export's -output and -name)."""

    repository: Path
    name: str
    manifest: ExportManifest

    @property
    def folder(self) -> Path:
        return self.repository / self.name

    @property
    def vocab_file(self) -> Path | None:
        """BERT's vocab.txt; None for the other families, whose vocabulary is their tokenizer.json's."""
        return self.folder / self.manifest.vocab_file if self.manifest.vocab_file else None

    @property
    def tokenizer_file(self) -> Path | None:
        """The model's own tokenizer.json (every family but BERT, AUTO and head exports), which then splits text
        instead of the original's rules."""
        return self.folder / self.manifest.tokenizer_file if self.manifest.tokenizer_file else None


def _export_arguments(config: ServerConfig, source: Path) -> list[str]:
    """bert-export flags for the settings that shape the exported model. Runtime settings stay with the bridge, and
    instances (-num_worker) are applied when the embedded Triton loads the model: changing them re-exports nothing."""
    args = ["-model_dir", str(source), "-target", "embedded",
            "-max_batch_size", str(config.max_batch_size),
            "-priority_batch_size", str(config.priority_batch_size),
            "-ckpt_name", config.ckpt_name, "-config_name", config.config_name]
    # A classifier folder exports its head unless a pooling strategy is named (bert-export decides it: the default
    # strategy is not passed). AUTO and the heads take the layer from the model; a -pooling_layer given with them
    # goes along, for bert-export to refuse.
    classifier_head = is_classifier(source) and "pooling_strategy" not in config.explicit
    if not classifier_head:
        args += ["-pooling_strategy", config.pooling_strategy]
    model_decides_layer = classifier_head or config.pooling_strategy in (AUTO_STRATEGY, PoolingStrategy.SPLADE.name)
    if not model_decides_layer or "pooling_layer" in config.explicit:
        args += ["-pooling_layer", *map(str, config.pooling_layer)]
    if config.tuned_model_dir:
        args += ["-tuned_model_dir", str(config.tuned_model_dir)]
    for flag in ("no_position_embeddings", "fp16", "normalize"):
        if getattr(config, flag):
            args.append(f"-{flag}")
    if config.quantize:
        args += ["-quantize", config.quantize]
    return args


def _fingerprint(paths: list[Path]) -> list:
    """Names, sizes and modification times of the files a model is made of (cheap, and catches re-saved weights)."""
    entries = []
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        entries += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return entries


def exporter_code_digest() -> str:
    """A digest of the exporter's code: part of every cache key, so a changed exporter re-exports."""
    import bert_exporter

    digest = hashlib.sha256()
    for path in sorted(Path(bert_exporter.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def export_on_the_fly(config: ServerConfig, source: Path) -> ServedModel:
    args = _export_arguments(config, source)
    sources = [source] + ([config.tuned_model_dir] if config.tuned_model_dir else [])
    key = hashlib.sha256(json.dumps([args, _fingerprint(sources), exporter_code_digest()]).encode()).hexdigest()
    repository = config.cache_dir / "models" / key[:20]
    name = EXPORT_NAME
    # Held until this process exits, so `bert-serving-cache prune` leaves the entry alone; records source and use.
    lock = claim_cache_entry(repository, source=source, name=name, export_flags=args)
    if (repository / name / MANIFEST_FILE).is_file():
        log.info("reusing the model exported earlier from %s (%s)", source, repository / name)
        return ServedModel(repository=repository, name=name, manifest=load_manifest(repository / name))
    # bert-export assembles the folder aside and moves it into place last: a manifest means a complete export.
    command = [sys.executable, "-m", "bert_exporter.cli", *args, "-output", str(repository), "-name", name]
    log.info("exporting %s for Triton (first start with these settings; later starts reuse it)", source)
    # bert-export's progress lines are passed on as they come; a failure ends with its one-line reason.
    last_line = "no message"
    export = child_process.spawn(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in export.stdout:
            sys.stderr.write(line)
            last_line = line.strip() or last_line
        export.wait()
    finally:  # interrupted: bert-export removes its unfinished folder on SIGTERM
        child_process.stop(export, timeout_s=30)
        export.stdout.close()
        if export.returncode != 0:  # failed or interrupted: `bert-serving-cache list` shows no entry without a model
            drop_cache_entry(repository, lock)
    if export.returncode != 0:
        raise StartupError(f"exporting {source} failed: {last_line}")
    return ServedModel(repository=repository, name=name, manifest=load_manifest(repository / name))


def load_manifest(folder: Path) -> ExportManifest:
    try:
        return ExportManifest.load(folder)
    except (OSError, ValueError, TypeError) as e:  # unreadable, not JSON, or keys that are not a manifest's
        raise StartupError(f"{folder / MANIFEST_FILE} is not a valid bert-export manifest ({e}); "
                           "export the model again with bert-export") from e


def exported_instances(folder: Path) -> dict:
    """-num_worker, -device_map and -cpu as the export's config.pbtxt has them (Triton's instance groups)."""
    from bert_exporter.triton_config import CONFIG_FILE, read_as_dict

    try:
        config = read_as_dict(folder)
    except Exception as e:  # a missing file, or text that is no model config
        raise StartupError(f"{folder / CONFIG_FILE} cannot be read as a Triton model config: {e}") from e
    groups = config.get("instance_group") or [{"count": 1}]
    return {
        "num_worker": sum(int(g.get("count", 1)) * max(1, len(g.get("gpus", []))) for g in groups),
        "device_map": tuple(int(gpu) for g in groups for gpu in g.get("gpus", [])),
        "cpu": all(g.get("kind") == "KIND_CPU" for g in groups),
    }


def resolve_model(config: ServerConfig, source: Optional[Path] = None) -> ServedModel:
    """The export served for one -model_dir (default: the first; none given: the packaged model): the folder itself
    when bert-export wrote it, else an export on the fly."""
    if source is None:
        source = config.model_dir
    if source is None:
        try:
            source = packaged_model_dir()
        except ExportError as e:
            raise StartupError(str(e)) from e
    if not source.is_dir():
        raise StartupError(f"-model_dir {source} is not a directory")
    if (source / MANIFEST_FILE).is_file():
        source = source.resolve()
        return ServedModel(repository=source.parent, name=source.name, manifest=load_manifest(source))
    check_architecture(config, source)
    return export_on_the_fly(config, source)


def check_architecture(config: ServerConfig, source: Path) -> None:
    """Refuses, before exporting, a model bert-export cannot export (an unsupported model_type, a config that is no
    encoder's) with bert-export's own one-line reason."""
    from bert_exporter.encoder_config import read_config
    from bert_exporter.source import config_path

    try:
        read_config(config_path(source, config.config_name))
    except ExportError as e:
        raise StartupError(f"cannot serve {source}: {e}") from e


def settle_models(config: ServerConfig) -> tuple[ServerConfig, list[UnservedModel]]:
    """Which models this bridge serves, decided in this one place: each -model_dir (NAME=PATH, else named after its
    folder), then the models of --model-repository (those of --model-name, in that order, else all in name order);
    none of both: the packaged model as 'bert'. Returns the config carrying each one's ModelSpec (the first is the
    default), and the models of a whole repository that cannot be served, with why. A model named on the command line
    that cannot be served fails the start (StartupError), as a single model always did."""
    # (name, -model_dir or repository folder, export, found by serving a whole repository)
    named: list[tuple[str, Optional[Path], ServedModel, bool]] = []
    for source in config.model_dirs:
        named.append((source.name or source.path.resolve().name, source.path, resolve_model(config, source.path),
                      False))
    if not config.model_dirs and config.model_repository is None:
        named.append((PACKAGED_MODEL_NAME, None, resolve_model(config), False))
    unserved: list[UnservedModel] = []
    if config.model_repository is not None:
        found, unserved = _repository_models(config)
        named += [(name, folder, model, config.serves_whole_repository) for name, folder, model in found]
    names = [name for name, *_ in named] + [model.name for model in unserved]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise StartupError(f"two models are named '{twice[0]}': name them apart with -model_dir NAME=PATH")
    specs = []
    for name, model_dir, model, scanned in named:
        try:
            specs.append(settle_model(config, model, name=name, model_dir=model_dir))
        except StartupError as e:
            if not scanned:
                raise
            unserved.append(UnservedModel(name=name, folder=model.folder, reason=e.message))
    if not specs:
        raise StartupError(f"no model of {config.model_repository} can be served: "
                           + "; ".join(f"{u.name}: {u.reason}" for u in unserved))
    return dataclasses.replace(config, models=tuple(specs)), unserved


def _repository_models(config: ServerConfig) -> tuple[list[tuple[str, Path, ServedModel]], list[UnservedModel]]:
    """--model-repository's models: those of --model-name (each must be there), or every bert-export folder in it.
    Served whole, a folder whose export cannot be read is reported as unserved, and an export for another runtime
    than the embedded tritonserver's is left out (a repository may hold an onnx export beside the embedded one)."""
    repository = config.model_repository
    if not repository.is_dir():
        raise StartupError(f"--model-repository {repository} is not a directory")
    found: list[tuple[str, Path, ServedModel]] = []
    unserved: list[UnservedModel] = []
    if config.model_names:
        for name in config.model_names:
            folder = repository / name
            if not (folder / MANIFEST_FILE).is_file():
                raise StartupError(f"{folder} is not a model exported by bert-export (no {MANIFEST_FILE})")
            found.append((name, folder, ServedModel(repository=repository, name=name, manifest=load_manifest(folder))))
        return found, unserved
    folders = sorted(path.parent for path in repository.glob(f"*/{MANIFEST_FILE}")
                     if not path.parent.name.startswith("."))  # a dot folder: an export still being written
    if not folders:
        raise StartupError(f"--model-repository {repository} holds no model exported by bert-export")
    for folder in folders:
        if not MODEL_NAME_RE.fullmatch(folder.name):
            unserved.append(UnservedModel(name=folder.name, folder=folder, reason=(
                "not a model name (letters, digits, '.', '_' and '-'): rename the folder")))
            continue
        try:
            manifest = load_manifest(folder)
        except StartupError as e:
            unserved.append(UnservedModel(name=folder.name, folder=folder, reason=e.message))
            continue
        if config.embedded_triton and manifest.target != Target.EMBEDDED.value:
            log.info("%s is a -target %s export, which the embedded tritonserver cannot run: not served (use "
                     "--triton-url for it)", folder, manifest.target)
            continue
        found.append((folder.name, folder, ServedModel(repository=repository, name=folder.name, manifest=manifest)))
    return found, unserved


def settle_model(config: ServerConfig, model: ServedModel, *, name: Optional[str] = None,
                 model_dir: Optional[Path] = None) -> ModelSpec:
    """One model's settings, served as ``name`` (default: its folder's): every flag the user did not give is filled
    from the export's manifest; a flag that contradicts the graph, or an export the chosen Triton cannot run, is
    refused (StartupError)."""
    name = name or model.name
    manifest = model.manifest
    if config.embedded_triton and manifest.target != Target.EMBEDDED.value:
        raise StartupError(f"{model.folder} is a -target {manifest.target} export, which the embedded tritonserver "
                           "cannot run (it has only the python backend): serve it with --triton-url HOST:PORT of a "
                           "tritonserver that has that backend, or export -target embedded")
    recorded = {
        "pooling_strategy": PoolingStrategy.parse(manifest.pooling_strategy).name,
        "pooling_layer": tuple(manifest.pooling_layer),
        "no_position_embeddings": manifest.no_position_embeddings,
        "fp16": manifest.output_dtype == "float16",
        "priority_batch_size": manifest.priority_batch_size,
        "normalize": manifest.normalize,
        "quantize": manifest.quantize,
    }
    config = _settle_auto(config, model)
    conflicts = [f"-{flag} {getattr(config, flag)!r} (exported with {recorded[flag]!r})"
                 for flag in EXPORT_FLAGS if flag in recorded and flag in config.explicit
                 and getattr(config, flag) != recorded[flag]]
    # The casing of a model's own tokenizer is part of the model, not a runtime choice.
    if (manifest.tokenizer_file and "do_lower_case" in config.explicit
            and config.do_lower_case != manifest.do_lower_case):
        conflicts.append("-cased_tokenization (the model's own tokenizer lower-cases)")
    if conflicts:
        raise StartupError(f"{model.folder} was exported with other settings: {'; '.join(conflicts)}. "
                           "Export it again with bert-export, or pass the source model folder as -model_dir.")
    instances = exported_instances(model.folder)
    if config.embedded_triton:
        # The embedded Triton loads the model with -num_worker instances; it runs on this machine's CPU only.
        if config.device_map:
            raise StartupError("-device_map needs GPUs: the embedded tritonserver runs on CPU; serve a -target onnx "
                               "or tensorrt export with --triton-url on a GPU host")
        instances = {"num_worker": instances["num_worker"], "device_map": (), "cpu": True}
    else:
        # An external Triton loads config.pbtxt as exported: instances were fixed by bert-export.
        contradicted = [f"-{flag} {getattr(config, flag)!r} (exported with {instances[flag]!r})"
                        for flag in instances if flag in config.explicit and getattr(config, flag) != instances[flag]]
        if contradicted:
            raise StartupError(f"{model.folder} was exported with other Triton instances: {'; '.join(contradicted)}; "
                               "an external tritonserver loads its config.pbtxt as exported. Export it again with "
                               "bert-export -num_worker/-device_map/-cpu.")
    if config.max_batch_size > manifest.max_batch_size and "max_batch_size" in config.explicit:
        raise StartupError(f"-max_batch_size {config.max_batch_size} exceeds the model's max_batch_size "
                           f"{manifest.max_batch_size}")
    settings = {**recorded, **instances, "max_seq_len": manifest.max_seq_len, "do_lower_case": manifest.do_lower_case,
                "mask_cls_sep": manifest.mask_cls_sep, "max_batch_size": manifest.max_batch_size}
    flags = {flag: settings[flag] if flag in settings and flag not in config.explicit else getattr(config, flag)
             for flag in MODEL_FLAGS}
    if manifest.head is not None and flags["mask_cls_sep"]:
        raise StartupError(f"{model.folder} serves its {manifest.head['kind']} head, which reads [CLS] and [SEP] as "
                           "the model was trained: drop -mask_cls_sep")
    return ModelSpec(name=name, task=manifest.task, folder=model.folder, manifest=manifest, model_dir=model_dir,
                     triton_name=name if config.embedded_triton else model.name, **flags)


def _settle_auto(config: ServerConfig, model: ServedModel) -> ServerConfig:
    """-pooling_strategy AUTO accepts a model exported with AUTO, and then stands for what AUTO resolved to."""
    manifest = model.manifest
    resolved = manifest.sentence_transformers
    if config.pooling_strategy == AUTO_STRATEGY:
        if resolved is None:
            raise StartupError(f"{model.folder} was not exported with -pooling_strategy AUTO (it pools "
                               f"{manifest.pooling_strategy}); export it again with -pooling_strategy AUTO, or pass "
                               "the sentence-transformers folder itself as -model_dir")
        config = dataclasses.replace(config, pooling_strategy=manifest.pooling_strategy,
                                     explicit=config.explicit - {"pooling_strategy"})
    if resolved is not None:
        log.info("-pooling_strategy AUTO resolved sentence-transformers pooling %r to %s over layer %s, normalize %s, "
                 "max_seq_len %s, the model's own %s", resolved["pooling_mode"], resolved["pooling_strategy"],
                 resolved["pooling_layer"], manifest.normalize, manifest.max_seq_len, manifest.tokenizer_file)
    return config
