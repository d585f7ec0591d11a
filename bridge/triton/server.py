"""The embedded tritonserver: nvidia-pytriton's bundled Triton 2.51 binary, run as a supervised child process.

What it needs to serve a python-backend model when started directly (shared/reference/triton-notes.md):
- a backend directory whose ``python/`` holds libtriton_python.so, triton_python_backend_utils.py and the stub for
  this Python version (the wheel keeps the stubs apart; we link them into a cache folder, never edit site-packages);
- this virtual environment's ``bin/`` first on PATH, so the stub's ``python3`` sees our site-packages;
- LD_LIBRARY_PATH with libpython's folder and the wheel's bundled libraries.

Triton runs in explicit model-control mode and loads only the models it is told to: a repository may also hold
exports for other runtimes (onnx, tensorrt) or other models, and none of them is loaded, or can fail the start.
The bridge serves its models -- exports in different folders, under names of its own -- from a repository of links
it writes (``link_repository``): one folder per name, linked to the export, so Triton knows each model by the name
the clients use.
Whatever happens to it, nothing of it outlives the bridge: the child dies with its parent (child_process), and once
it has exited, its process group (the python backend stubs) is killed and its shared-memory regions are removed.
If it dies while the bridge serves, ``TritonSupervisor`` cleans up after it and starts it again on the same ports,
with the backoff and the limit of ``RestartPolicy``.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
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
from typing import Awaitable, Callable, Optional, Sequence

from .. import child_process
from ..errors import BridgeError, StartupError

log = logging.getLogger("bert_bridge.triton")

PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
SHARED_MEMORY = Path("/dev/shm")
# Lines every start on a CPU-only machine logs; they never explain a failure.
LOG_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "CUDA driver", "pinned memory", "GPU metrics", "cuda")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(address: str, port: int) -> bool:
    """Nothing listens on it (SO_REUSEADDR: connections of a dead server in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise StartupError("the embedded Triton needs nvidia-pytriton (pip install nvidia-pytriton==0.7.0), "
                           "or pass --triton-url to use a running tritonserver") from e
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backend_directory(cache_dir: Path) -> Path:
    """A backend folder with the python backend and the stub for this interpreter, linked from the wheel.

    One folder per wheel location, so bridges from different virtual environments never re-link each other's.
    """
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StartupError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    wheel = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    backends = cache_dir / "triton-backends" / f"{version}-{wheel}"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = {name: root / "backends" / "python" / name for name in PYTHON_BACKEND_FILES}
    sources["triton_python_backend_stub"] = stub
    for name, source in sources.items():
        link = python_dir / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        staged = python_dir / f".{name}.{os.getpid()}"  # link aside, then rename: atomic for concurrent starts
        staged.unlink(missing_ok=True)
        staged.symlink_to(source)
        staged.replace(link)
    return backends


def _child_environment() -> dict:
    root = _pytriton_root()
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    library_path = [sysconfig.get_config_var("LIBDIR") or "", str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in library_path if p)
    return env


def link_repository(folder: Path, models: dict[str, Path]) -> Path:
    """``folder`` made a model repository of links: ``folder/NAME`` -> the export folder, for each model; anything
    else in it is removed first (the links of an earlier start)."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
    for name, export in models.items():
        (folder / name).symlink_to(Path(export).resolve(), target_is_directory=True)
    return folder


def one_line(text: str) -> str:
    """Triton's (possibly multi-line) error as one log line."""
    return " ".join(text.split())


@dataclass(frozen=True)
class TritonEndpoints:
    grpc_url: str
    http_url: str
    metrics_url: str


class EmbeddedTriton:
    """Start, supervise and stop one tritonserver child on loopback ports, serving ``models`` of the repository.

    ``instance_groups`` (model -> Triton's JSON form, e.g. ``[{"count": 2, "kind": "KIND_CPU"}]``) replace the
    exported ones at load time: the number of instances is Triton configuration, not part of the exported graph.
    With ``skip_unloadable``, a model Triton cannot load at the first start is left out (``unloadable`` says why) and
    the others serve; only none loading fails the start. Restarts load what the first start loaded, all of it.
    """

    def __init__(self, *, model_repository: Path, models: Sequence[str], cache_dir: Path, log_path: Path,
                 instance_groups: Optional[dict] = None, skip_unloadable: bool = False,
                 startup_timeout_s: float = 300, grpc_port: int = 0, http_port: int = 0, metrics_port: int = 0,
                 address: str = "127.0.0.1"):
        self.model_repository = Path(model_repository)
        self.models = tuple(models)
        self.instance_groups = instance_groups or {}
        self.skip_unloadable = skip_unloadable
        self.unloadable: dict[str, str] = {}  # model -> why Triton could not load it (the first start only)
        self.grpc_port = grpc_port  # 0: any free port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.address = address
        self.cache_dir = Path(cache_dir)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.process = None
        self.endpoints: Optional[TritonEndpoints] = None
        self._shm_prefix = ""

    def command(self) -> list[str]:
        binary = _pytriton_root() / "bin" / "tritonserver"
        backends = prepare_backend_directory(self.cache_dir)
        self.grpc_port, self.http_port, self.metrics_port = (
            port or _free_port() for port in (self.grpc_port, self.http_port, self.metrics_port))
        # Separate shared-memory regions, so several servers on one machine never collide, and so ours can be
        # found and removed if Triton could not remove them itself.
        self._shm_prefix = f"bert-serving-{os.getpid()}-{self.grpc_port}"
        return [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--http-address={self.address}", f"--http-port={self.http_port}",
            f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--pinned-memory-pool-byte-size=0",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--log-verbose=0",
        ]

    def start(self) -> TritonEndpoints:
        """Start the server and load the models. On any failure -- an interrupt included -- nothing is left running."""
        self.spawn()
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def spawn(self) -> None:
        """Start the process; ``wait_until_serving`` then waits for it. Call from the thread that lives as long as
        the child (the main thread): the parent-death signal is tied to the thread that forked it."""
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting the embedded tritonserver on %s (log: %s)", self.model_repository, self.log_path)
        try:
            with open(self.log_path, "wb") as log_file:  # one log per start: an excerpt never shows an old run
                self.process = child_process.spawn(command, stdout=log_file, stderr=subprocess.STDOUT,
                                                   env=_child_environment())
        except BaseException:
            self.stop()
            raise
        self.endpoints = TritonEndpoints(grpc_url=f"{self.address}:{self.grpc_port}",
                                         http_url=f"{self.address}:{self.http_port}",
                                         metrics_url=f"{self.address}:{self.metrics_port}")

    def wait_until_serving(self) -> None:
        """Block until the spawned server is live and has loaded the models; StartupError with its log if not.
        Safe to run in a worker thread: it only polls the process and asks Triton's HTTP API."""
        self._wait_until_live()
        failed = {}
        for model in self.models:
            try:
                self._load(model)
            except StartupError as e:
                if not self.skip_unloadable:
                    raise
                self._check_running(f"loading model '{model}'")
                failed[model] = one_line(e.message)
        if failed:
            if len(failed) == len(self.models):
                raise StartupError("tritonserver could load none of the models: "
                                   + "; ".join(f"{model}: {reason}" for model, reason in failed.items()))
            self.unloadable.update(failed)
            self.models = tuple(model for model in self.models if model not in failed)
        self.skip_unloadable = False  # a restart must load every model the first start loaded
        log.info("tritonserver is ready (gRPC %s)", self.endpoints.grpc_url)

    def release_taken_ports(self) -> None:
        """Before a restart: keep the ports the clients know, unless another process has taken one since; then
        every port is chosen afresh (the gRPC URL changes, and whoever holds it must learn the new one)."""
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        if all(_port_is_free(self.address, port) for port in ports if port):
            return
        log.warning("a port of the embedded tritonserver was taken meanwhile: it restarts on new ports")
        self.grpc_port = self.http_port = self.metrics_port = 0

    def exit_description(self) -> str:
        """How the process ended: ``exit status 1`` or ``killed by signal 9 (SIGKILL)``."""
        code = self.process.returncode if self.process is not None else None
        if code is None:
            return "still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown"
            return f"killed by signal {-code} ({name})"
        return f"exit status {code}"

    def _http(self, path: str, body: Optional[dict] = None, timeout_s: float = 1) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://{self.endpoints.http_url}{path}", data=data, method=(
            "GET" if body is None else "POST"))
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _wait_until_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self._check_running("starting")
            try:
                if self._http("/v2/health/live")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise StartupError(f"tritonserver did not start within {self.startup_timeout_s:.0f}s:\n{self.log_excerpt()}")

    def _load(self, model: str) -> None:
        body = {}
        if model in self.instance_groups:
            body = {"parameters": {"config": json.dumps(self._config_with_instances(model))}}
        try:
            status, text = self._http(f"/v2/repository/models/{model}/load", body, timeout_s=self.startup_timeout_s)
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            self._check_running(f"loading model '{model}'")
            raise StartupError(f"tritonserver did not answer while loading model '{model}': {e}") from e
        if status != 200:
            try:
                reason = json.loads(text).get("error", text)
            except ValueError:
                reason = text
            raise StartupError(f"tritonserver could not load model '{model}' from {self.model_repository}: {reason}")

    def _config_with_instances(self, model: str) -> dict:
        """The exported config.pbtxt, with this start's instance groups, named as the repository names it (a link
        may give an export another name than bert-export's -name)."""
        from bert_exporter.triton_config import read_as_dict

        try:
            config = read_as_dict(self.model_repository / model)
        except Exception as e:  # a missing file, or text that is no model config
            raise StartupError(f"{self.model_repository / model} has no readable config.pbtxt: {e}") from e
        config["instance_group"] = self.instance_groups[model]
        config["name"] = model
        return config

    def _check_running(self, doing: str) -> None:
        if self.process.poll() is not None:
            raise StartupError(f"tritonserver exited with status {self.process.returncode} while {doing}:\n"
                               f"{self.log_excerpt()}")

    def log_excerpt(self, lines: int = 12) -> str:
        """The lines of this start that say what went wrong (the log is rewritten at every start)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        telling = [line for line in text if (line[:1] in ("E", "W") or "error" in line.lower())
                   and not any(noise in line for noise in LOG_NOISE)]
        if not telling:  # e.g. killed: its last lines, without the tables of its start-up banner
            telling = [line for line in text if line[:1] not in ("|", "+")]
        return "\n".join(telling[-lines:]) or "(the log is empty)"

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to its whole process group, without waiting (``stop`` then reaps it and removes what is left)."""
        if self.process is not None:
            child_process.kill_group(self.process)

    def stop(self, timeout_s: float = 15) -> None:
        """SIGINT, wait, then kill: Triton unloads models and removes its shared memory on SIGINT. Then whatever
        is left of it -- stubs of a Triton that was killed, their shared memory -- goes too."""
        if self.process is None:
            return
        if self.process.poll() is None:
            log.info("stopping the embedded tritonserver")
        child_process.stop(self.process, timeout_s=timeout_s, first_signal=signal.SIGINT)
        for region in SHARED_MEMORY.glob(f"{self._shm_prefix}*") if self._shm_prefix else ():
            region.unlink(missing_ok=True)


@dataclass(frozen=True)
class RestartPolicy:
    """When a tritonserver that was serving dies: restart it at once, then -- if it dies again, or a restart fails,
    before it has served ``stable_after_s`` -- after 1 s, 2 s, 4 s ... up to ``max_delay_s``. At ``max_failures``
    failures in a row the bridge gives up (exit status 2): a model that crashes at every load must not loop forever.
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    max_failures: int = 5

    def delay_s(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th failure in a row."""
        if failures <= 1:
            return 0.0
        return min(self.first_delay_s * 2 ** (failures - 2), self.max_delay_s)


class TritonSupervisor:
    """Keeps the embedded tritonserver serving, for as long as the bridge runs.

    When the process dies: ``on_down(reason)`` (the pool fails every chunk at once with that reason and reports it),
    one clear log line with the exit status and the log excerpt, everything left of the old server is removed
    (process group, shared memory), and it is restarted on the same ports (new ones if another process took them)
    following ``policy``. Once the model is loaded again, ``on_up(grpc_url)`` must confirm that the bridge reaches
    it (raising BackendUnavailable otherwise, which counts as a failed restart). ``run()`` only returns by raising
    StartupError when the policy gives up.
    """

    def __init__(self, triton: EmbeddedTriton, *, on_down: Callable[[str], None],
                 on_up: Callable[[str], Awaitable[None]], policy: RestartPolicy = RestartPolicy(),
                 poll_s: float = 0.1):
        self.triton = triton
        self.on_down = on_down
        self.on_up = on_up
        self.policy = policy
        self.poll_s = poll_s
        self.restarts = 0  # successful ones, for SHOW_STATUS

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        up_since = loop.time()
        while True:
            while self.triton.is_alive():
                await asyncio.sleep(self.poll_s)
            failures = 1 if loop.time() - up_since >= self.policy.stable_after_s else failures + 1
            reason = f"the embedded tritonserver died ({self.triton.exit_description()})"
            excerpt = self.triton.log_excerpt()
            self.on_down(f"{reason}; it is being restarted")
            self.triton.stop()  # a dead process: its group is killed, its shared memory removed, at once
            while True:
                if failures >= self.policy.max_failures:
                    raise StartupError(f"{reason}; giving up after {failures} failures in a row, none of them up "
                                       f"{self.policy.stable_after_s:g}s:\n{excerpt}")
                delay_s = self.policy.delay_s(failures)
                log.error("%s; restarting it %s (failure %d in a row; the bridge gives up at %d). Its log:\n%s",
                          reason, f"in {delay_s:g}s" if delay_s else "now", failures, self.policy.max_failures,
                          excerpt)
                await asyncio.sleep(delay_s)
                try:
                    await self._restart()
                except BridgeError as e:
                    failures += 1
                    reason, excerpt = "the restarted tritonserver did not serve", e.message
                    continue
                break
            self.restarts += 1
            up_since = loop.time()
            log.info("the embedded tritonserver serves again (gRPC %s, restart %d)", self.triton.endpoints.grpc_url,
                     self.restarts)

    async def _restart(self) -> None:
        triton = self.triton
        triton.release_taken_ports()
        triton.spawn()  # here, in the event loop's (main) thread: the child's parent-death signal is tied to it
        try:
            await asyncio.to_thread(triton.wait_until_serving)
            await self.on_up(triton.endpoints.grpc_url)
        except BaseException:
            # Failed, or cancelled because the bridge stops: kill it outright, which also ends the waiting thread.
            triton.kill()
            triton.stop()
            raise
