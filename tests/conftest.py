"""Shared fixtures: real processes on ephemeral ports, the unmodified 1.10 client, the default model's folder.

- ``legacy_client``: the unmodified PyPI ``bert_serving.client`` 1.10.0 module (installed apart, in .venv/legacy-client,
  so it does not shadow ours), loaded under the name ``legacy_bert_serving_client``.
- ``start_bridge(*flags)``: a context manager running ``bert-serving-start`` with those flags on free ports; it yields a
  ``RunningBridge`` and fails fast, with the log, when the process dies before it is ready.
- ``default_export``: the packaged model as bert-export writes it with default flags (a ``ServedModel``).
- ``default_bridge``: one bridge on the packaged model with default flags, shared by the whole session.
- ``http_served``: one bridge on the packaged model with the HTTP front end, shared by the whole session (the HTTP
  tests, the documented curl commands, the examples): ``(RunningBridge, http_port)``.
- ``hf_model``: transformers' (BertTokenizer, BertModel) for the packaged model, the numerical oracle.
- ``head_models``: tiny random classifiers, a CrossEncoder and a masked LM (tests/head_models.py), built on first use.
- ``head_exports``: those exported into one repository (head_models.EXPORTS) that one ``bert-serving-triton`` serves;
  ``heads_served``: one bridge serving them all over HTTP and ZeroMQ (``--triton-url``): ``(RunningBridge, url)``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from bert_exporter.options import packaged_model_dir
from harness import READY_MARKER, REPO_ROOT, RunningBridge, free_port, standalone_triton, wait_for_log

STOP_TIMEOUT_S = 30  # as RunningBridge.stop: a bridge still running this long after its SIGINT is killed


@pytest.fixture(scope="session")
def start_bridge(tmp_path_factory):
    """``with start_bridge('-pooling_layer', '-1') as bridge: ...`` -- extra flags are passed verbatim.

    Leaving the ``with`` sends the bridge SIGINT without waiting for it to exit: a bridge takes seconds to stop
    (Triton unloads the model), which the following tests need not wait for. Its exit is awaited -- and a bridge
    still running STOP_TIMEOUT_S after its SIGINT killed -- at the next start and when the session ends. A test that
    checks how a bridge stops does so inside its ``with`` block (or runs its own process).
    """
    stopping: list[tuple[RunningBridge, float]] = []

    def reap(wait: bool) -> None:
        for bridge, interrupted_at in list(stopping):
            left_s = interrupted_at + STOP_TIMEOUT_S - time.monotonic()
            if bridge.process.poll() is None and (wait or left_s <= 0):
                try:
                    bridge.process.wait(max(left_s, 0))
                except subprocess.TimeoutExpired:
                    bridge.process.kill()
                    bridge.process.wait()
            if bridge.process.poll() is not None:
                stopping.remove((bridge, interrupted_at))

    @contextlib.contextmanager
    def start(*flags: str, ready_timeout_s: float = 300, env: dict | None = None):
        reap(wait=False)
        port, port_out = free_port(), free_port()
        log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
        command = [sys.executable, "-m", "bert_bridge.cli", "-port", str(port), "-port_out", str(port_out), *flags]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        bridge = RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path)
        try:
            wait_for_log(bridge, READY_MARKER, ready_timeout_s)
            yield bridge
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            stopping.append((bridge, time.monotonic()))

    yield start
    reap(wait=True)


@pytest.fixture(scope="session")
def default_export():
    """The packaged model exported by bert-export with default flags (the same cache the bridge itself uses)."""
    from bert_bridge.config import parse_args
    from bert_bridge.model_source import resolve_model

    return resolve_model(parse_args([]))


@pytest.fixture(scope="session")
def default_bridge(start_bridge):
    with start_bridge() as bridge:
        yield bridge


@pytest.fixture(scope="session")
def http_served(start_bridge):
    """Default flags plus -http_port, started once: none of its users changes the bridge's settings, and the ones that
    count requests compare before and after. -http_max_connect 64: the HTTP tests send concurrent traffic and must
    not meet the limit they do not test (tests/http_api/test_http_limits.py tests it on a bridge of its own)."""
    port = free_port()
    with start_bridge("-http_port", str(port), "-http_max_connect", "64") as bridge:
        yield bridge, port


@pytest.fixture(scope="session")
def hf_model():
    """transformers' tokenizer and BertModel for the packaged model: the numerical oracle."""
    import torch
    from transformers import BertModel, BertTokenizer

    path = packaged_model_dir()
    torch.set_num_threads(2)
    return BertTokenizer(str(path / "vocab.txt"), do_lower_case=True), BertModel.from_pretrained(str(path)).eval()


@pytest.fixture(scope="session")
def legacy_client():
    """The unmodified bert-serving-client 1.10.0, imported from its own folder under a name of its own."""
    legacy_client_dir = REPO_ROOT / ".venv" / "legacy-client" / "bert_serving" / "client"
    init = legacy_client_dir / "__init__.py"
    if not init.is_file():
        pytest.fail(f"{init} is missing: run `make install`")
    name = "legacy_bert_serving_client"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(legacy_client_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    assert module.__version__ == "1.10.0"
    return module


@pytest.fixture(scope="session")
def head_models(tmp_path_factory):
    import torch

    from head_models import HeadModels

    torch.set_num_threads(2)
    return HeadModels(tmp_path_factory.mktemp("heads"))


@pytest.fixture(scope="session")
def head_exports(head_models, tmp_path_factory):
    from bert_exporter.cli import main as bert_export
    from head_models import EXPORTS, HeadExports, source_of

    repository = tmp_path_factory.mktemp("head-repository")
    sources = {}
    for name, (_, flags) in EXPORTS.items():
        sources[name] = source_of(head_models, name)
        status = bert_export(["-model_dir", str(sources[name]), *flags, "-output", str(repository), "-name", name])
        assert status == 0, f"bert-export of {name} failed with {status}"
    with standalone_triton(repository, tmp_path_factory.mktemp("head-triton"), "--address", "127.0.0.1") as server:
        yield HeadExports(repository, f"127.0.0.1:{server.port}", sources)


# a request limit low enough for tests/heads to pass it with 10,000 documents
HEADS_MAX_REQUEST_SENTENCES = 5000


@pytest.fixture(scope="session")
def heads_served(start_bridge, head_exports):
    port = free_port()
    with start_bridge("--model-repository", str(head_exports.repository), "--triton-url", head_exports.triton_url,
                      "-http_port", str(port), "--max-request-sentences", str(HEADS_MAX_REQUEST_SENTENCES)) as bridge:
        yield bridge, f"http://127.0.0.1:{port}"
