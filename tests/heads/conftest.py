"""Models with heads (tests/head_models.py), exported once into one repository that one ``bert-serving-triton``
serves; bridges attach to it with ``--triton-url`` and start in seconds."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

# export name -> (which tiny model, bert-export flags); in name order, the first is a --model-repository's default
EXPORTS = {
    "bert-1": ("classifier bert 1", []),
    "bert-3": ("classifier bert 3", []),
    "bert-encoder": ("classifier bert 3", ["-pooling_strategy", "REDUCE_MEAN"]),  # a classifier's encoder: embeds
    "cross-encoder": ("cross-encoder", []),
    "splade": ("masked-lm", ["-pooling_strategy", "SPLADE"]),
}


@dataclass
class HeadExports:
    repository: Path
    triton_url: str
    sources: dict = field(default_factory=dict)  # export name -> the source folder (the oracle's model)

    def folder(self, name: str) -> Path:
        return self.repository / name


def _source(head_models, which: str) -> Path:
    kind, *args = which.split()
    if kind == "classifier":
        return head_models.classifier(args[0], int(args[1]))
    return head_models.cross_encoder() if kind == "cross-encoder" else head_models.masked_lm()


@pytest.fixture(scope="session")
def head_exports(head_models, tmp_path_factory):
    import subprocess
    import sys

    from bert_exporter.cli import main as bert_export
    from harness import RunningBridge, free_port, wait_for_log

    repository = tmp_path_factory.mktemp("head-repository")
    sources = {}
    for name, (which, flags) in EXPORTS.items():
        sources[name] = _source(head_models, which)
        status = bert_export(["-model_dir", str(sources[name]), *flags, "-output", str(repository), "-name", name])
        assert status == 0, f"bert-export of {name} failed with {status}"
    folder = tmp_path_factory.mktemp("head-triton")
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    url = f"127.0.0.1:{ports['grpc']}"
    command = [str(Path(sys.executable).parent / "bert-serving-triton"), "--model-repository", str(repository),
               "--address", "127.0.0.1", "--cache-dir", str(folder),
               *[f"--{kind}-port={port}" for kind, port in ports.items()]]
    log_path = folder / "standalone.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = RunningBridge(process=process, port=ports["grpc"], port_out=0, log_path=log_path)
    try:
        wait_for_log(server, f"tritonserver ready: gRPC {url}", timeout_s=300)
        yield HeadExports(repository, url, sources)
    finally:
        server.stop(timeout_s=60)
