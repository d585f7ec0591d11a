"""One ``bert-serving-start`` (bridge + its embedded tritonserver) per benchmark setting, started and stopped here.

Ready when the bridge logs its ready line (polled, with the process checked alive) rather than after a fixed wait.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

READY_MESSAGE = "ready to serve"  # bert_bridge.cli logs it once the ZeroMQ sockets serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen | None  # None: a server this benchmark did not start (-port/-port_out of a running one)
    port: int
    port_out: int
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(flags: list[str], log_path: Path, *, ready_timeout_s: float, env: dict | None = None) -> RunningServer:
    port, port_out = free_port(), free_port()
    command = [sys.executable, "-m", "bert_bridge.cli", "-port", str(port), "-port_out", str(port_out), *flags]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = RunningServer(process=process, port=port, port_out=port_out, log_path=log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if READY_MESSAGE in log_path.read_text(errors="replace"):
            return server
        if process.poll() is not None:
            break
        time.sleep(0.2)
    server.stop()
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    raise RuntimeError(f"bert-serving-start {' '.join(flags)} was not ready within {ready_timeout_s:.0f}s: "
                       + " | ".join(tail))
