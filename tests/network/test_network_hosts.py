"""The test hosts themselves (bench/network_hosts.py): hosts on one switch reach each other by name, a partition cuts
them apart, and leaving the block -- a failing test included -- removes the namespaces, their hosts files and every
process inside, a child that outlived its parent too."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bert_bench.network_hosts import NETNS_ETC, TestHosts, why_hosts_unavailable

SERVE = """
import socket, subprocess, sys, time
# A child in a session of its own (as bert-serving-triton's tritonserver): it outlives this process's SIGINT.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(child.pid))
server = socket.create_server(("0.0.0.0", 7000))
while True:
    connection, _ = server.accept()
    connection.sendall(b"hello")
    connection.close()
"""

CONNECT = """
import socket, sys
try:
    print(socket.create_connection(("b", 7000), timeout=2).recv(5).decode())
except OSError as e:
    print(type(e).__name__)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_hosts_talk_by_name_are_cut_apart_by_a_partition_and_leave_nothing_behind(tmp_path):
    reason = why_hosts_unavailable()
    if reason:
        pytest.skip(f"cannot make test hosts: {reason}")
    child_pid_file = tmp_path / "child.pid"
    with pytest.raises(RuntimeError, match="the test failed"):
        with TestHosts(["a", "b"]) as hosts:
            names = [host.netns for host in hosts.hosts.values()] + [hosts.switch]
            server = hosts["b"].start("server", [sys.executable, "-c", SERVE, str(child_pid_file)],
                                      tmp_path / "server.log")
            deadline = time.monotonic() + 60
            while not child_pid_file.exists() or not child_pid_file.read_text():
                assert server.process.poll() is None and time.monotonic() < deadline, server.log()
                time.sleep(0.1)
            answers = []
            for _ in range(100):  # until the server listens
                answers.append(hosts["a"].run(sys.executable, "-c", CONNECT).stdout.strip())
                if answers[-1] == "hello":
                    break
                time.sleep(0.1)
            hosts["b"].partition_from(hosts["a"])
            cut = hosts["a"].run(sys.executable, "-c", CONNECT).stdout.strip()
            dropped = hosts["b"].dropped_packets()
            raise RuntimeError("the test failed")  # the hosts must go anyway
    child = int(child_pid_file.read_text())
    assert answers[-1] == "hello", answers  # the switch joins the hosts; "b" resolves on "a"
    assert cut == "TimeoutError" and dropped > 0  # dropped, not refused: the connection attempt just waits
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    assert not [name for name in names if name in listed], listed
    assert not [name for name in names if (NETNS_ETC / name).exists()]
    assert server.process.poll() is not None and not alive(child), "a process outlived its test host"
