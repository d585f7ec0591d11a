"""`make serve`, the README's first command: it exports the packaged model twice if needed (bert-as-service's defaults,
and the model card's semantics as all-MiniLM-L6-v2) and serves both in the foreground, on ZeroMQ and HTTP; the
README's two snippets (BertClient and the openai SDK) run against it as written, only the ports replaced (the test
serves on free ports, as the documented curl commands are run: tests/docs/test_doc_commands.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from harness import REPO_ROOT, RunningBridge, free_port, wait_for_log

pytestmark = pytest.mark.slow

DEFAULT_NAME, ST_NAME = "minilm", "all-MiniLM-L6-v2"


def readme_snippets() -> list[str]:
    """The python blocks of the README's "Encode from anywhere" section, as written."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Encode from anywhere", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def on_ports(snippet: str, written: str, ours: str) -> str:
    assert snippet.count(written) == 1, f"the README's snippet no longer has {written!r}:\n{snippet}"
    return snippet.replace(written, ours)


def run_snippet(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, f"{code}\n{result.stderr}"
    return result.stdout.strip()


def test_make_serve_brings_up_both_models_and_the_readme_snippets_run(legacy_client, tmp_path):
    port, port_out, http_port = free_port(), free_port(), free_port()
    log_path = tmp_path / "make-serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["make", "serve", f"PORT={port}", f"PORT_OUT={port_out}",
                                    f"HTTP_PORT={http_port}"], cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service = RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path, program="make serve")
    try:
        wait_for_log(service, "ready to serve", timeout_s=600)
        ready = next(line for line in service.log().splitlines() if "ready to serve" in line)
        assert f":{port} (requests)" in ready and f":{port_out} (replies)" in ready
        assert "model_repository/minilm" in ready and "REDUCE_MEAN" in ready and "max_seq_len 25" in ready
        for name in (DEFAULT_NAME, ST_NAME):
            assert (REPO_ROOT / "model_repository" / name / "bert_export.json").is_file()
        with legacy_client.BertClient(port=port, port_out=port_out, timeout=60000) as bc:
            vectors = bc.encode(["make serve works"])
            assert bc.server_config["model_name"] == DEFAULT_NAME
        assert vectors.shape == (1, 384) and vectors.dtype == np.float32

        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=30) as reply:
            cards = {card["id"]: card for card in json.loads(reply.read())["data"]}
        assert list(cards) == [DEFAULT_NAME, ST_NAME]
        assert cards[DEFAULT_NAME]["semantics"] == "bert-as-service" and cards[DEFAULT_NAME]["max_tokens"] == 25
        assert cards[ST_NAME]["semantics"] == "sentence-transformers" and cards[ST_NAME]["max_tokens"] == 256
        assert "embeddings" in cards[ST_NAME]["default_for"] and all(card["ready"] for card in cards.values())

        bert_client, openai_sdk = readme_snippets()
        printed = run_snippet(on_ports(bert_client, "BertClient()", f"BertClient(port={port}, port_out={port_out})"))
        assert printed == "(3, 384)", printed
        printed = run_snippet(on_ports(openai_sdk, "localhost:8125", f"localhost:{http_port}"))
        assert printed == "2 384", printed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:  # the service's own bounds are 10 s of draining and 15 s for tritonserver; the rest is a slow machine
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    # make dies of the SIGINT itself; the service must have shut down cleanly, Triton included.
    assert "bye" in service.log() and "stopping the embedded tritonserver" in service.log(), service.log()[-2000:]


def test_make_serve_on_a_port_in_use_fails_in_one_line():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(["make", "serve", f"PORT={busy}", f"PORT_OUT={free_port()}",
                                 f"HTTP_PORT={free_port()}"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and f"-port {busy}" in errors[0] and "in use" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "starting the embedded tritonserver" not in result.stderr
