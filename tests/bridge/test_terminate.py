"""``bert-serving-terminate`` with the original's flags: it fails clearly when no server listens, and confirms a stop."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from harness import free_port


def terminate(*flags: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "bert_bridge.terminate", *flags], capture_output=True, text=True,
                            timeout=60)
    return result, time.monotonic() - started


def assert_one_line_failure(result: subprocess.CompletedProcess, elapsed_s: float, port: int) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bert-serving-terminate: error: "), result.stderr
    assert f"tcp://localhost:{port}" in lines[0] and "1000 ms" in lines[0]
    assert 0.9 < elapsed_s < 6, f"took {elapsed_s:.1f}s with -timeout 1000"


@pytest.mark.parametrize("port_flag", ["-port", "-port_in", "-port_data"])
def test_nothing_listening_is_a_failure_within_the_timeout(port_flag):
    port = free_port()
    assert_one_line_failure(*terminate(port_flag, str(port), "-timeout", "1000"), port)


def test_a_listener_that_is_not_a_server_is_a_failure():
    """Something accepts TCP connections there but never speaks ZeroMQ: nothing was delivered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert_one_line_failure(*terminate("-ip", "localhost", "-port", str(port), "-timeout", "1000"), port)


def test_bad_timeout_is_refused():
    result, _ = terminate("-port", "5555", "-timeout", "0")
    assert result.returncode == 2 and "-timeout" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_running_bridge_is_stopped_and_that_is_confirmed(start_bridge):
    with start_bridge() as bridge:
        result, _ = terminate("-port_in", str(bridge.port), "-timeout", "30000")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"bert-serving-terminate: the server at tcp://localhost:{bridge.port} " \
                                        "has shut down"
        assert bridge.process.poll() is not None or bridge.process.wait(30) == 0
        assert bridge.process.returncode == 0
