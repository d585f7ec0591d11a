"""A service started on some of the machine's cores stays on them: ``taskset -c 0 bert-serving-start`` (or a
container's cpuset) keeps bridge, tritonserver and every onnxruntime thread on core 0. Left to choose, onnxruntime
starts a thread per core of the machine and pins each to its own core, out of the set it was given; the replica
benchmark (docs/SCALING.md) measured a replica pinned to one core using 1.9."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import RunningBridge, descendants, free_port, wait_for_log

pytestmark = pytest.mark.slow


def allowed_cpus(pid: int) -> dict[int, str]:
    """thread id -> its Cpus_allowed_list, for every thread of ``pid``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        found[int(task.name)] = next(line.split()[1] for line in status.splitlines()
                                     if line.startswith("Cpus_allowed_list:"))
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to one of them")
def test_a_service_pinned_to_one_core_keeps_every_thread_there(default_export, legacy_client, tmp_path):
    port, port_out = free_port(), free_port()
    log_path = tmp_path / "bridge.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "bert_bridge.cli", "-model_dir",
                                    str(default_export.folder), "-port", str(port), "-port_out", str(port_out)],
                                   stdout=log, stderr=subprocess.STDOUT)
    bridge = RunningBridge(process=process, port=port, port_out=port_out, log_path=log_path)
    try:
        wait_for_log(bridge, "ready to serve", timeout_s=300)
        with legacy_client.BertClient(port=port, port_out=port_out, timeout=120_000) as bc:
            assert bc.encode(["every thread stays on core 0"] * 64).shape == (64, 384)  # onnxruntime's pool is up
        threads = {(pid, tid): cpus for pid in descendants(process.pid) | {process.pid}
                   for tid, cpus in allowed_cpus(pid).items()}
        assert len(threads) > 10  # the bridge's, tritonserver's and the stub's threads were all read
        assert set(threads.values()) == {"0"}, {key: cpus for key, cpus in threads.items() if cpus != "0"}
    finally:
        bridge.stop(timeout_s=60)
