"""Helpers for tests that run real processes: free ports, a running bridge, waiting on its log, a tritonserver of its
own.

A module of its own (not conftest) so tests can import it by a name no other folder's conftest shadows.
"""
from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bert_bench.process_memory import descendants  # noqa: F401  (the process tree below a pid, for leftover checks)

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_MARKER = "ready to serve"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, handed out once per test run. Drawn below the kernel's ephemeral range: a port the
    kernel picked (bind to port 0, as the bridge does for its embedded tritonserver, or an outgoing connection) could
    be taken by another process between this check and the server's own bind, or be drawn twice."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    while True:
        port = random.randrange(10_000, max(ephemeral_low, 20_000))  # a range starting lower leaves no safe place
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


@dataclass
class RunningBridge:
    process: subprocess.Popen
    port: int
    port_out: int
    log_path: Path
    program: str = "bert-serving-start"  # what failure messages call it

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_for_log(bridge: RunningBridge, marker: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in bridge.log():
            return
        if bridge.process.poll() is not None:
            pytest.fail(f"{bridge.program} exited with {bridge.process.returncode} before '{marker}':\n{bridge.log()}")
        time.sleep(0.2)
    bridge.stop()
    pytest.fail(f"{bridge.program} did not log '{marker}' within {timeout_s}s:\n{bridge.log()}")


def launch_standalone_triton(repository: Path, folder: Path, ports: dict[str, int], *flags: str,
                             log_name: str = "standalone.log") -> RunningBridge:
    """``bert-serving-triton`` (a tritonserver started on its own, as model_repository/README.md starts it) serving
    ``repository`` on ``ports`` (grpc, http, metrics), its cache and its log ``log_name`` in ``folder``: started, not
    yet ready (``port``: its gRPC port)."""
    command = [str(Path(sys.executable).parent / "bert-serving-triton"), "--model-repository", str(repository),
               "--cache-dir", str(folder), *flags, *[f"--{kind}-port={port}" for kind, port in ports.items()]]
    log_path = folder / log_name
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return RunningBridge(process=process, port=ports["grpc"], port_out=0, log_path=log_path,
                         program="bert-serving-triton")


@contextmanager
def standalone_triton(repository: Path, folder: Path, *flags: str, timeout_s: float = 300) -> Iterator[RunningBridge]:
    """``launch_standalone_triton`` on free ports; yields it once ready, stopped afterwards (``process.returncode``
    then says how it exited)."""
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    server = launch_standalone_triton(repository, folder, ports, *flags)
    try:
        wait_for_log(server, f"tritonserver ready: gRPC 127.0.0.1:{ports['grpc']}", timeout_s=timeout_s)
        yield server
    finally:
        server.stop(timeout_s=60)


def run_concurrently(work, arguments, timeout_s: float = 300) -> list:
    """Call ``work(argument)`` in one thread per argument, all at once; return what they raised.

    A failure inside a thread must fail the test, so every exception is collected for the caller to assert on.
    """
    errors: list = []

    def guarded(argument) -> None:
        try:
            work(argument)
        except Exception as e:  # handed back to the test
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    return errors
