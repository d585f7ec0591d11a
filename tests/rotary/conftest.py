"""Fixtures for the rotary families (ModernBERT, NomicBert, GTE): their tiny models and sentence-transformers folders
(tests/rotary_models.py), and one tritonserver (``bert-serving-triton``) serving every export to bridges started with
``--triton-url``, so each configuration costs a bridge, not a tritonserver. Everything is made once per session,
on first use."""
from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import READY_MARKER, RunningBridge, free_port, launch_standalone_triton, wait_for_log
from rotary_models import FAMILIES, MAX_SEQ_LEN, POOLING, build_model, build_sentence_transformers
from tiny_models import ModelFolders


@pytest.fixture(scope="session")
def rotary_folders(tmp_path_factory) -> ModelFolders:
    import torch

    torch.set_num_threads(2)
    return ModelFolders(tmp_path_factory.mktemp("rotary"), build_model, build_sentence_transformers)


@pytest.fixture(scope="session", params=list(FAMILIES))
def rotary_family(request) -> str:
    return request.param


@dataclass
class Served:
    """One bridge on one export: ZeroMQ (bridge.port, bridge.port_out) and HTTP (http_port)."""

    family: str
    auto: bool  # -pooling_strategy AUTO from the sentence-transformers folder
    source: Path  # the folder exported: the model's, or its sentence-transformers folder
    bridge: RunningBridge
    http_port: int


class RotaryServing:
    """Exports every family twice (its plain pooling, and AUTO from its sentence-transformers folder) into one
    repository that one ``bert-serving-triton`` serves; ``bridge(family, auto)`` starts that export's bridge on first
    use (all of them at once the first time: they start in parallel)."""

    def __init__(self, folders: ModelFolders, work: Path):
        self.folders, self.work = folders, work
        self.repository = work / "repository"
        self.bridges: dict[str, Served] = {}
        self.triton: RunningBridge | None = None
        self.grpc_port = free_port()

    @staticmethod
    def name(family: str, auto: bool) -> str:
        return f"{family}-auto" if auto else family

    def flags(self, family: str, auto: bool) -> list[str]:
        if auto:
            return ["-pooling_strategy", "AUTO"]
        strategy, layers = POOLING[family]
        return ["-pooling_strategy", strategy, "-pooling_layer", *map(str, layers), "-max_seq_len", str(MAX_SEQ_LEN)]

    def start(self) -> None:
        from bert_exporter.cli import main as bert_export

        for family in FAMILIES:
            for auto in (False, True):
                source = self.folders.sentence_transformers(family) if auto else self.folders.model(family)
                status = bert_export(["-model_dir", str(source), "-output", str(self.repository),
                                      "-name", self.name(family, auto), *self.flags(family, auto)])
                assert status == 0, f"bert-export of {self.name(family, auto)} failed"
        folder = self.work / "triton"
        folder.mkdir()
        ports = {"grpc": self.grpc_port, "http": free_port(), "metrics": free_port()}
        self.triton = launch_standalone_triton(self.repository, folder, ports)
        wait_for_log(self.triton, "tritonserver ready", 120)
        starting = [self._start_bridge(family, auto) for family in FAMILIES for auto in (False, True)]
        for served in starting:
            wait_for_log(served.bridge, READY_MARKER, 120)
            self.bridges[self.name(served.family, served.auto)] = served

    def _start_bridge(self, family: str, auto: bool) -> Served:
        port, port_out, http_port = free_port(), free_port(), free_port()
        log_path = self.work / f"bridge-{self.name(family, auto)}.log"
        command = [sys.executable, "-m", "bert_bridge.cli",
                   "-model_dir", str(self.repository / self.name(family, auto)),
                   "--triton-url", f"localhost:{self.grpc_port}", "-port", str(port), "-port_out", str(port_out),
                   "-http_port", str(http_port), *self.flags(family, auto)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        source = self.folders.sentence_transformers(family) if auto else self.folders.model(family)
        bridge = RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path)
        return Served(family=family, auto=auto, source=source, bridge=bridge, http_port=http_port)

    def served(self, family: str, *, auto: bool) -> Served:
        if not self.bridges:
            self.start()
        return self.bridges[self.name(family, auto)]

    def stop(self) -> None:
        for served in self.bridges.values():  # all at once: each takes a moment to drain
            if served.bridge.process.poll() is None:
                served.bridge.process.send_signal(signal.SIGINT)
        for served in self.bridges.values():
            served.bridge.stop()
        if self.triton is not None:
            self.triton.stop()


@pytest.fixture(scope="session")
def rotary_serving(rotary_folders, tmp_path_factory):
    serving = RotaryServing(rotary_folders, tmp_path_factory.mktemp("rotary-serving"))
    try:
        yield serving
    finally:
        serving.stop()
