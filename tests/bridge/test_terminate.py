"""``bert-serving-terminate`` with the original's flags: it fails clearly when no server listens, and confirms a stop."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from bert_bridge.terminate import server_processes, wait_until_gone
from harness import alive, descendants, free_port


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
    # Waited the timeout, then gave up; the upper bound also counts starting a Python, slow on a loaded machine.
    assert 0.9 < elapsed_s < 30, f"took {elapsed_s:.1f}s with -timeout 1000"


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
    """'has shut down' means gone: the bridge and everything it started (tritonserver, its python stubs) have exited
    when the command returns, not seconds later."""
    with start_bridge() as bridge:
        started = descendants(bridge.process.pid)
        assert started, "the bridge runs an embedded tritonserver"
        result, _ = terminate("-port_in", str(bridge.port), "-timeout", "30000")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"bert-serving-terminate: the server at tcp://localhost:{bridge.port} " \
                                        "has shut down"
        assert alive(started) == set(), "processes the bridge started outlived bert-serving-terminate"
        assert bridge.process.poll() == 0, "the bridge was still running when bert-serving-terminate returned"


def test_the_processes_of_a_local_listener_are_found_and_waited_for():
    """What the command waits for: the process that listens on the port, and what it started."""
    code = ("import socket, subprocess, sys; child = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(60)']); s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
            "print(s.getsockname()[1], child.pid, flush=True); sys.stdin.read(); child.kill()")
    listener = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, child = map(int, listener.stdout.readline().split())
        assert server_processes("localhost", port) == {listener.pid, child}
        assert server_processes("127.0.0.1", port) == {listener.pid, child}
        assert server_processes("localhost", free_port()) == set()
        assert wait_until_gone({listener.pid, child}, time.monotonic() + 0.2) == sorted([listener.pid, child])
        listener.stdin.close()  # it kills its child and exits
        assert wait_until_gone({listener.pid, child}, time.monotonic() + 30) == []  # a zombie counts as gone
    finally:
        listener.kill()
        listener.wait()
