"""`make serve`, the README's first command: it exports the default model if needed and serves it in the foreground."""
from __future__ import annotations

import os
import signal
import socket
import subprocess

import numpy as np
import pytest

from harness import REPO_ROOT, RunningBridge, free_port, wait_for_log

pytestmark = pytest.mark.slow


def test_make_serve_brings_up_the_default_model(legacy_client, tmp_path):
    port, port_out = free_port(), free_port()
    log_path = tmp_path / "make-serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["make", "serve", f"PORT={port}", f"PORT_OUT={port_out}"], cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service = RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path)
    try:
        wait_for_log(service, "ready to serve", timeout_s=600)
        ready = next(line for line in service.log().splitlines() if "ready to serve" in line)
        assert f":{port} (requests)" in ready and f":{port_out} (replies)" in ready
        assert "model_repository/minilm" in ready and "REDUCE_MEAN" in ready and "max_seq_len 25" in ready
        assert (REPO_ROOT / "model_repository" / "minilm" / "bert_export.json").is_file()
        with legacy_client.BertClient(port=port, port_out=port_out, timeout=60000) as bc:
            vectors = bc.encode(["make serve works"])
        assert vectors.shape == (1, 384) and vectors.dtype == np.float32
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
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
        result = subprocess.run(["make", "serve", f"PORT={busy}", f"PORT_OUT={free_port()}"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and f"-port {busy}" in errors[0] and "in use" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "starting the embedded tritonserver" not in result.stderr
