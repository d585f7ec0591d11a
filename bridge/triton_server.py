"""The embedded tritonserver: nvidia-pytriton's bundled Triton 2.51 binary, run as a supervised child process.

What it needs to serve a python-backend model when started directly (shared/reference/triton-notes.md):
- a backend directory whose ``python/`` holds libtriton_python.so, triton_python_backend_utils.py and the stub for
  this Python version (the wheel keeps the stubs apart; we link them into a cache folder, never edit site-packages);
- this virtual environment's ``bin/`` first on PATH, so the stub's ``python3`` sees our site-packages;
- LD_LIBRARY_PATH with libpython's folder and the wheel's bundled libraries.
Ports open only after every model loaded; we poll readiness and fail fast if the child dies meanwhile.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import StartupError

log = logging.getLogger("bert_bridge.triton")

PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise StartupError("the embedded Triton needs nvidia-pytriton (pip install nvidia-pytriton==0.7.0), "
                           "or pass --triton-url to use a running tritonserver") from e
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backend_directory(cache_dir: Path) -> Path:
    """A backend folder with the python backend and the stub for this interpreter, linked from the wheel."""
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StartupError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    backends = cache_dir / "triton-backends" / version
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = {name: root / "backends" / "python" / name for name in PYTHON_BACKEND_FILES}
    sources["triton_python_backend_stub"] = stub
    for name, source in sources.items():
        link = python_dir / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return backends


def _child_environment() -> dict:
    root = _pytriton_root()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    library_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in library_path if p)
    return env


@dataclass(frozen=True)
class TritonEndpoints:
    grpc_url: str
    http_url: str
    metrics_url: str


class EmbeddedTriton:
    """Start, supervise and stop one tritonserver child on free loopback ports."""

    def __init__(self, *, model_repository: Path, cache_dir: Path, log_path: Path, startup_timeout_s: float = 300,
                 grpc_port: int = 0):
        self.model_repository = Path(model_repository)
        self.grpc_port = grpc_port  # 0: any free port
        self.cache_dir = Path(cache_dir)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.process: Optional[subprocess.Popen] = None
        self.endpoints: Optional[TritonEndpoints] = None

    def start(self) -> TritonEndpoints:
        binary = _pytriton_root() / "bin" / "tritonserver"
        backends = prepare_backend_directory(self.cache_dir)
        grpc_port, http_port, metrics_port = self.grpc_port or _free_port(), _free_port(), _free_port()
        command = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1", f"--http-port={http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
            "--pinned-memory-pool-byte-size=0",
            # Separate shared-memory regions, so several bridges on one machine never collide.
            f"--backend-config=python,shm-region-prefix-name=bert-serving-{os.getpid()}-{grpc_port}",
            "--log-verbose=0",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting the embedded tritonserver on %s (log: %s)", self.model_repository, self.log_path)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                            env=_child_environment(), start_new_session=True)
        self.endpoints = TritonEndpoints(grpc_url=f"127.0.0.1:{grpc_port}", http_url=f"127.0.0.1:{http_port}",
                                         metrics_url=f"127.0.0.1:{metrics_port}")
        self._wait_until_ready()
        return self.endpoints

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.endpoints.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartupError(f"tritonserver exited with status {self.process.returncode} while loading the "
                                   f"model:\n{self.log_excerpt()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        log.info("tritonserver is ready (gRPC %s)", self.endpoints.grpc_url)
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise StartupError(f"tritonserver was not ready within {self.startup_timeout_s:.0f}s:\n{self.log_excerpt()}")

    def log_excerpt(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        # Errors matter; the CUDA/NVML/DCGM lines on CPU-only machines are noise.
        interesting = [line for line in text if line[:1] in ("E", "W") or "error" in line.lower()]
        return "\n".join((interesting or text)[-lines:])

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15) -> None:
        """SIGINT, wait, then kill: Triton unloads models and removes its shared memory on SIGINT."""
        if self.process is None or self.process.poll() is not None:
            return
        log.info("stopping the embedded tritonserver")
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop within %.0fs; killing it", timeout_s)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
