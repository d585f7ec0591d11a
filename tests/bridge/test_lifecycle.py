"""Start, stop and fail cleanly: real bridges, real signals, and checks for leftover processes and /dev/shm regions.

Each test here reproduces a defect a new user hit (issue 13): a repository with other exports in it, processes left
behind after a kill, requests dropped on shutdown, start-up errors buried in old logs, ports in use or out of range,
instance flags silently ignored, corrupt manifests, and error messages the 1.10 client could not show.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from harness import RunningBridge, alive, descendants, free_port, wait_for_log

pytestmark = pytest.mark.slow

SHARED_MEMORY = Path("/dev/shm")


# --- helpers -------------------------------------------------------------------------------------------------------

def shm_regions(bridge_pid: int) -> list[str]:
    """The python backend's shared-memory regions of a tritonserver started by this bridge process."""
    return sorted(p.name for p in SHARED_MEMORY.glob(f"bert-serving-{bridge_pid}-*"))


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.2)


def assert_nothing_left(bridge_pid: int, processes: set[int], timeout_s: float = 30) -> None:
    wait_until(lambda: not alive(processes), timeout_s,
               f"processes left behind: {[command_line(p)[:120] for p in alive(processes)]}")
    wait_until(lambda: not shm_regions(bridge_pid), 10, f"/dev/shm regions left behind: {shm_regions(bridge_pid)}")


def launch(*flags: str, tmp_path: Path, env: dict | None = None) -> RunningBridge:
    """A bridge process that is not waited for (for tests that act during its start)."""
    port, port_out = free_port(), free_port()
    log_path = tmp_path / f"bridge-{port}.log"
    command = [sys.executable, "-m", "bert_bridge.cli", "-port", str(port), "-port_out", str(port_out), *flags]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path)


def run_bridge(*flags: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """A bridge that is expected to refuse to start."""
    port, port_out = free_port(), free_port()
    command = [sys.executable, "-m", "bert_bridge.cli", *(() if "-port" in flags else ("-port", str(port))),
               *(() if "-port_out" in flags else ("-port_out", str(port_out))), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


def error_lines(output: str) -> list[str]:
    """The bridge's logged errors (``HH:MM:SS E ...``) and argparse's ``prog: error: ...``."""
    return [line for line in output.splitlines() if " E " in line or ": error: " in line]


def assert_refused_in_one_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def copy_export(folder: Path, repository: Path, name: str = "") -> Path:
    """A copy of an exported model folder in another repository; the ONNX file is linked, not copied."""
    target = repository / (name or folder.name)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("model.onnx"))
    (target / "1" / "model.onnx").symlink_to(folder / "1" / "model.onnx")
    return target


def client(legacy_client, bridge, **kwargs):
    return legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, **kwargs)


# --- defect 1 and 12: what Triton loads, and what it writes --------------------------------------------------------

def test_only_the_served_model_is_loaded_and_the_repository_stays_clean(default_export, start_bridge, legacy_client,
                                                                        tmp_path):
    import tritonclient.grpc as grpcclient

    repository = tmp_path / "model_repository"
    served = copy_export(default_export.folder, repository)
    # Beside it: an onnx export, which the bundled tritonserver cannot load, and the leftovers of a killed export.
    onnx = copy_export(default_export.folder, repository, "onnx_model")
    (onnx / "config.pbtxt").write_text('name: "onnx_model"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    (repository / f".{served.name}.partial-1-x" / "1").mkdir(parents=True)
    with start_bridge("-model_dir", str(served)) as bridge:
        with client(legacy_client, bridge, timeout=60000) as bc:
            assert bc.encode(["only one model is loaded"]).shape == (1, 384)
            triton_url = bc.server_config["triton"]["url"]
        with grpcclient.InferenceServerClient(triton_url) as triton:
            states = {m.name: m.state for m in triton.get_model_repository_index().models}
    assert states.get(served.name) == "READY"
    assert states.get("onnx_model", "") != "READY"
    assert not [p for p in repository.rglob("*.pyc")], "the python backend wrote bytecode into the repository"


# --- defect 3: nothing outlives the bridge -------------------------------------------------------------------------

def test_kill_9_of_the_bridge_leaves_nothing(start_bridge):
    with start_bridge() as bridge:
        pid = bridge.process.pid
        below = descendants(pid)
        assert any("tritonserver" in command_line(p) for p in below)
        assert any("triton_python_backend_stub" in command_line(p) for p in below)
        assert shm_regions(pid)
        bridge.process.kill()
        bridge.process.wait()
        assert_nothing_left(pid, below)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_tritonserver_starts_stops_everything(default_export, sig, tmp_path):
    bridge = launch("-model_dir", str(default_export.folder), tmp_path=tmp_path)
    try:
        wait_for_log(bridge, "starting the embedded tritonserver", timeout_s=120)
        wait_until(lambda: any("tritonserver" in command_line(p) for p in descendants(bridge.process.pid)), 30,
                   "tritonserver was spawned")
        below = descendants(bridge.process.pid)
        bridge.process.send_signal(sig)
        assert bridge.process.wait(60) == 0, bridge.log()
    finally:
        bridge.stop()
    assert "ready to serve" not in bridge.log()
    assert_nothing_left(bridge.process.pid, below)


# A tritonserver killed under load is restarted by the same bridge: test_triton_restart.py.


# --- defect 4: one reply per request, shutdown included ------------------------------------------------------------

@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "TERMINATION"])
def test_shutdown_answers_every_request_in_flight(default_export, legacy_client, tmp_path, how):
    bridge = launch("-model_dir", str(default_export.folder), "--drain-timeout-s", "6", tmp_path=tmp_path)
    replies: dict[str, object] = {}
    clients = {}
    try:
        wait_for_log(bridge, "ready to serve", timeout_s=120)
        below = descendants(bridge.process.pid)
        clients = {name: client(legacy_client, bridge) for name in ("huge", "small", "status")}

        def encode(name: str, count: int) -> None:
            try:
                replies[name] = clients[name].encode([f"sentence number {i} for {name}" for i in range(count)])
            except Exception as e:
                replies[name] = e

        def received(requests: int) -> None:
            wait_until(lambda: clients["status"].server_status["statistic"]["num_data_request"] >= requests, 60,
                       f"the bridge received {requests} request(s)")

        # Far more than 6 s of work (about 100 s here), then a small request that finishes within the drain.
        threads = [threading.Thread(target=encode, args=(name, count), daemon=True)
                   for name, count in (("huge", 40000), ("small", 8))]
        threads[0].start()
        received(1)
        threads[1].start()
        received(2)
        if how == "TERMINATION":
            terminate = Path(sys.executable).parent / "bert-serving-terminate"
            subprocess.run([str(terminate), "-port", str(bridge.port)], capture_output=True, timeout=30)
        else:
            bridge.process.send_signal(getattr(signal, how))
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), f"a request got no reply; log:\n{bridge.log()}"
        assert bridge.process.wait(60) == 0, bridge.log()
    finally:
        bridge.stop()
        for bc in clients.values():
            bc.close()
    assert isinstance(replies["small"], np.ndarray) and replies["small"].shape == (8, 384), replies["small"]
    assert isinstance(replies["huge"], TypeError) and "ShuttingDown" in str(replies["huge"]), replies["huge"]
    assert_nothing_left(bridge.process.pid, below)


# --- defect 5: start-up errors say what failed, in this start's words ----------------------------------------------

def test_a_failing_model_shows_this_starts_reason_not_old_log_lines(default_export, tmp_path):
    served = copy_export(default_export.folder, tmp_path / "repository")
    model_py = served / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "    def initialize(self, args):\n",
        "    def initialize(self, args):\n        raise RuntimeError('model broken on purpose for this test')\n"))
    cache = tmp_path / "cache"
    port = free_port()
    old_log = cache / "logs" / f"tritonserver-{port}.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("E1111 00:00:00.000 1 model.cc:1] an old failure of an earlier run\n" * 40)
    result = run_bridge("-model_dir", str(served), "-port", str(port), "--cache-dir", str(cache))
    assert result.returncode == 2, result.stderr
    assert "model broken on purpose for this test" in result.stderr
    assert "an old failure of an earlier run" not in result.stderr


def test_an_onnx_target_without_triton_url_is_refused_in_one_line(default_export, tmp_path):
    served = copy_export(default_export.folder, tmp_path / "repository")
    manifest = json.loads((served / "bert_export.json").read_text())
    (served / "bert_export.json").write_text(json.dumps({**manifest, "target": "onnx"}))
    result = run_bridge("-model_dir", str(served))
    assert_refused_in_one_line(result, "-target onnx", "--triton-url")
    assert "starting the embedded tritonserver" not in result.stderr


# --- defects 6 and 7: ports ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("busy_flag", ["-port", "-port_out"])
def test_a_port_in_use_is_refused_before_anything_starts(busy_flag):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_bridge(busy_flag, str(busy), timeout_s=60)
    assert_refused_in_one_line(result, f"{busy_flag} {busy}", "in use")
    assert "exporting" not in result.stderr and "tritonserver" not in result.stderr


@pytest.mark.parametrize("flags, fragment", [
    (["-port", "70000"], "1 to 65535"),
    (["-port_out", "0"], "1 to 65535"),
    (["-http_port", "65536"], "1 to 65535"),
    (["-port", "7000", "-port_out", "7000"], "must differ"),
    (["--triton-url", "127.0.0.1:8001,127.0.0.1"], "HOST:PORT"),
    (["--triton-url", "127.0.0.1:8001,"], "HOST:PORT"),
    (["--triton-url", "127.0.0.1:8001,127.0.0.1:99999"], "1 to 65535"),
    (["--triton-url", "127.0.0.1:8001", "--triton-url", "127.0.0.1:8001"], "given twice"),
    (["--triton-url", "grpc://host"], "HOST:PORT"),
])
def test_bad_ports_and_triton_urls_are_refused_in_one_line(flags, fragment):
    result = run_bridge(*flags, timeout_s=60)
    assert_refused_in_one_line(result, fragment)


# --- defect 8: instance flags on an exported folder -----------------------------------------------------------------

def test_num_worker_applies_to_an_exported_folder_and_show_config_tells_the_truth(default_export, start_bridge,
                                                                                  legacy_client):
    with start_bridge("-model_dir", str(default_export.folder), "-num_worker", "2") as bridge:
        with client(legacy_client, bridge, timeout=60000) as bc:
            config = bc.server_config
            assert bc.encode(["two instances"]).shape == (1, 384)
    assert config["num_worker"] == 2
    assert [group["count"] for group in config["triton"]["instance_group"]] == [2]


@pytest.mark.parametrize("flags, fragment", [
    (["-device_map", "0"], "-device_map needs GPUs"),
    (["--triton-url", "127.0.0.1:1", "-num_worker", "3"], "-num_worker 3 (exported with 1)"),
])
def test_instance_flags_that_cannot_apply_are_refused(default_export, flags, fragment):
    result = run_bridge("-model_dir", str(default_export.folder), *flags)
    assert_refused_in_one_line(result, fragment)


# --- defect 9: a corrupt manifest ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["{not json", '{"format_version": 1, "target": "embedded"}', "[]"])
def test_a_corrupt_manifest_is_refused_in_one_line(default_export, tmp_path, text):
    served = copy_export(default_export.folder, tmp_path / "repository")
    (served / "bert_export.json").write_text(text)
    assert_refused_in_one_line(run_bridge("-model_dir", str(served)), "bert_export.json", "not a valid")


# --- defect 14: error messages reach the 1.10 client as the TypeError the docs promise -----------------------------

def test_an_error_message_with_commas_raises_type_error_in_the_1_10_client(default_bridge, legacy_client):
    with client(legacy_client, default_bridge, timeout=60000) as bc:
        # Past the client's own checks, straight to the server: token 1 of sentence 0 is not a string.
        request_id = bc._send(json.dumps([["fine", 1]]).encode(), 1)
        with pytest.raises(TypeError, match=r"sentence 0; token 1 is not a string"):
            bc._recv_ndarray(request_id)
        assert bc.encode(["still serving"]).shape == (1, 384)
