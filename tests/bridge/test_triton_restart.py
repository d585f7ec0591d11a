"""A tritonserver that dies is restarted (issue 10, "Done when" 2), and a bridge on an external Triton follows it.

The integration tests share one outage: a bridge with its embedded tritonserver (A) and a second bridge using A's
tritonserver through ``--triton-url`` (B), both under load from several clients (ours and the unmodified 1.10 one,
with and without timeouts) while /ready and SHOW_STATUS are watched; then A's tritonserver gets SIGKILL. Each test
asserts one thing users rely on about that outage. The restart policy (backoff, giving up) is tested on its own with a
stand-in for the tritonserver process, since a real crash loop would take minutes.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bert_bridge.errors import BackendUnavailable, StartupError
from bert_bridge.triton.server import RestartPolicy, TritonSupervisor
from harness import alive, descendants, free_port

SENTENCES = [f"sentence {i} sent while the tritonserver may die" for i in range(24)]
FLAGS = ("-max_seq_len", "16", "-max_batch_size", "8")
BACK_WITHIN_S = 10  # the bound: serving again within 10 s of the kill
TIMEOUT_MS = 20000  # the clients with a timeout; none of them may ever reach it


# --- the restart policy, with a stand-in for the process ------------------------------------------------------------

class FakeTriton:
    """EmbeddedTriton's surface for the supervisor; with ``restarts_fail`` every restart dies while loading."""

    def __init__(self, *, restarts_fail: bool):
        self.restarts_fail = restarts_fail
        self.running = True
        self.spawned = self.stopped = 0
        self.endpoints = type("Endpoints", (), {"grpc_url": "127.0.0.1:1"})()

    def is_alive(self) -> bool:
        return self.running

    def exit_description(self) -> str:
        return "killed by signal 9 (SIGKILL)"

    def log_excerpt(self) -> str:
        return "E model crashed on purpose"

    def release_taken_ports(self) -> None:
        pass

    def spawn(self) -> None:
        self.spawned += 1
        self.running = True

    def wait_until_serving(self) -> None:
        if self.restarts_fail:
            self.running = False
            raise StartupError("tritonserver exited with status 1 while loading model 'bert'")

    def kill(self) -> None:
        self.running = False

    def stop(self) -> None:
        self.stopped += 1
        self.running = False


def supervise(triton: FakeTriton, policy: RestartPolicy, on_up=None):
    """A coroutine running the supervisor after its tritonserver died, and what it called back with."""
    downs, ups = [], []

    async def back(url: str) -> None:
        ups.append(url)
        if on_up is not None:
            await on_up()

    async def scenario():
        supervisor = TritonSupervisor(triton, on_down=downs.append, on_up=back, policy=policy, poll_s=0.001)
        triton.running = False  # it dies after having served
        await asyncio.wait_for(supervisor.run(), 10)

    return scenario, downs, ups


def restart_waits(caplog) -> list[str]:
    return [record.getMessage().split("restarting it ")[1].split(" (")[0]
            for record in caplog.records if "restarting it" in record.getMessage()]


def test_a_tritonserver_that_fails_every_restart_makes_the_bridge_give_up_with_the_reason(caplog):
    triton = FakeTriton(restarts_fail=True)
    scenario, downs, ups = supervise(triton, RestartPolicy(first_delay_s=0.01, max_delay_s=0.03, max_failures=5))
    with pytest.raises(StartupError) as gave_up:
        asyncio.run(scenario())
    assert triton.spawned == 4 and not ups  # restarts after failures 1 to 4; the 5th gives up
    assert restart_waits(caplog) == ["now", "in 0.01s", "in 0.02s", "in 0.03s"], "at once, then doubling, capped"
    assert "giving up after 5 failures in a row" in gave_up.value.message
    assert "status 1 while loading model" in gave_up.value.message
    assert len(downs) == 1 and "died (killed by signal 9 (SIGKILL)); it is being restarted" in downs[0]
    assert not triton.running and triton.stopped >= triton.spawned


def test_a_restart_the_bridge_cannot_reach_counts_as_failed():
    triton = FakeTriton(restarts_fail=False)

    async def unreachable():
        raise BackendUnavailable("Triton did not confirm model 'bert' ready")

    scenario, downs, ups = supervise(triton, RestartPolicy(max_failures=2), on_up=unreachable)
    with pytest.raises(StartupError, match="did not confirm model 'bert' ready"):
        asyncio.run(scenario())
    assert triton.spawned == 1 and ups == ["127.0.0.1:1"] and not triton.running


def test_the_failure_count_starts_again_after_the_server_stayed_up(caplog):
    policy = RestartPolicy()
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [0, 1, 2, 4, 8, 16, 30]
    triton = FakeTriton(restarts_fail=False)
    served = []

    async def back_then_die_again():
        served.append(1)
        triton.running = len(served) >= 8  # dies 7 more times: with the count reset each time it never gives up

    # stable_after_s=0: every death follows a stable period, so each is the first failure again
    scenario, downs, ups = supervise(triton, RestartPolicy(stable_after_s=0, max_failures=2),
                                     on_up=back_then_die_again)

    async def until_served_again():
        task = asyncio.ensure_future(scenario())
        while len(served) < 8:
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(until_served_again())
    assert triton.spawned == 8 and len(downs) == 8 and set(restart_waits(caplog)) == {"now"}


# --- one real outage, shared by the tests below ---------------------------------------------------------------------

@dataclass
class Outage:
    killed_at: float = 0.0
    bridge_pid: int = 0
    old_processes: set = field(default_factory=set)
    old_regions: set = field(default_factory=set)  # (name, inode) of the old server's /dev/shm regions
    outcomes: dict = field(default_factory=dict)  # client name -> [(sent, answered, "vectors" | error text)]
    hung: list = field(default_factory=list)  # clients whose thread never finished
    ready: dict = field(default_factory=dict)  # "A"/"B" -> [(time, HTTP status, body)]
    states: dict = field(default_factory=dict)  # "A"/"B" -> [(time, SHOW_STATUS's "triton")]
    log: str = ""
    new_processes: set = field(default_factory=set)
    new_regions: set = field(default_factory=set)
    restarting_processes: set = field(default_factory=set)  # the tree while the second restart was under way
    stop_status: int | None = None
    stop_log: str = ""


def shm_regions(bridge_pid: int) -> set:
    regions = set()
    for path in Path("/dev/shm").glob(f"bert-serving-{bridge_pid}-*"):
        try:
            regions.add((path.name, path.stat().st_ino))
        except OSError:
            pass
    return regions


def http_ready(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def triton_process(pid: int) -> int | None:
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver"):
                return child
        except OSError:
            continue
    return None


@pytest.fixture(scope="module")
def outage(start_bridge, default_export, legacy_client):
    from bert_serving.client import BertClient

    http_a, http_b = free_port(), free_port()
    record = Outage()
    with start_bridge("-model_dir", str(default_export.folder), *FLAGS, "-http_port", str(http_a)) as a:
        with BertClient(port=a.port, port_out=a.port_out, timeout=TIMEOUT_MS) as bc:
            triton_url = bc.server_config["triton"]["url"]
            reference = bc.encode(SENTENCES)  # what every reply must be, before the kill and after the restart
        with start_bridge("-model_dir", str(default_export.folder), *FLAGS, "-http_port", str(http_b),
                          "--triton-url", triton_url) as b:
            bridges = {"A": (a, http_a), "B": (b, http_b)}
            stop = threading.Event()
            record.bridge_pid = a.process.pid

            def load(name: str, make_client) -> None:
                outcomes = record.outcomes.setdefault(name, [])
                with make_client() as bc:
                    while not stop.is_set():
                        sent = time.monotonic()
                        try:
                            vectors = bc.encode(SENTENCES)
                            outcome = "vectors" if np.allclose(vectors, reference, atol=1e-5) else "wrong vectors"
                        except Exception as e:  # every outcome is recorded and asserted on
                            outcome = f"{type(e).__name__}: {e}"
                        outcomes.append((sent, time.monotonic(), outcome))
                        if outcome != "vectors":
                            time.sleep(0.05)  # a client retrying in a tight loop would only load the machine

            def watch() -> None:
                with BertClient(port=a.port, port_out=a.port_out, timeout=TIMEOUT_MS) as status_a, \
                        BertClient(port=b.port, port_out=b.port_out, timeout=TIMEOUT_MS) as status_b:
                    while not stop.is_set():
                        for name, status in (("A", status_a), ("B", status_b)):
                            # Each answer is timed when it arrived: a /ready asked just before the kill can be
                            # answered after it, from a tritonserver that is gone.
                            ready = http_ready(bridges[name][1])
                            record.ready.setdefault(name, []).append((time.monotonic(), *ready))
                            triton = status.server_status["triton"]
                            record.states.setdefault(name, []).append((time.monotonic(), triton))
                        time.sleep(0.1)

            clients = {
                "1.10 client, no timeout": lambda: legacy_client.BertClient(port=a.port, port_out=a.port_out),
                "1.10 client, timeout": lambda: legacy_client.BertClient(port=a.port, port_out=a.port_out,
                                                                         timeout=TIMEOUT_MS),
                "our client, timeout": lambda: BertClient(port=a.port, port_out=a.port_out, timeout=TIMEOUT_MS),
                "our client on B, timeout": lambda: BertClient(port=b.port, port_out=b.port_out, timeout=TIMEOUT_MS),
            }
            threads = [threading.Thread(target=load, args=item, daemon=True) for item in clients.items()]
            threads.append(threading.Thread(target=watch, daemon=True))
            for thread in threads:
                thread.start()
            try:
                wait_until(lambda: len(record.outcomes) == len(clients) and all(
                    o and o[-1][2] == "vectors" for o in record.outcomes.values()), 60, "every client got vectors")
                triton = triton_process(a.process.pid)
                assert triton, "the bridge runs a tritonserver"
                record.old_processes = descendants(a.process.pid)
                record.old_regions = shm_regions(a.process.pid)
                record.killed_at = time.monotonic()
                os.kill(triton, signal.SIGKILL)
                wait_until(lambda: all(any(sent > record.killed_at and outcome == "vectors"
                                           for sent, _, outcome in o) for o in record.outcomes.values()),
                           BACK_WITHIN_S + 20, "every client got vectors again")
                wait_until(lambda: record.ready["B"][-1][1] == 200, 10, "B ready again")
            finally:
                stop.set()
                deadline = time.monotonic() + TIMEOUT_MS / 1000 + 5
                for thread in threads:
                    thread.join(max(0.1, deadline - time.monotonic()))
                record.hung = [name for name, thread in zip([*clients, "watch"], threads) if thread.is_alive()]
                record.log = a.log()
            assert a.process.poll() is None and b.process.poll() is None, a.log() + b.log()
            record.new_processes = descendants(a.process.pid)
            record.new_regions = shm_regions(a.process.pid)
        # Then a stop while the bridge restarts its tritonserver (loading the model) must leave nothing either.
        restarted = triton_process(a.process.pid)
        assert restarted, "the restarted tritonserver runs below the same bridge"
        os.kill(restarted, signal.SIGKILL)
        starts = a.log().count("starting the embedded tritonserver")
        wait_until(lambda: a.log().count("starting the embedded tritonserver") > starts, 30, "a second restart")
        wait_until(lambda: triton_process(a.process.pid), 10, "the second restart's tritonserver runs")
        record.restarting_processes = descendants(a.process.pid)
        a.process.send_signal(signal.SIGTERM)
        record.stop_status = a.process.wait(60)
        record.stop_log = a.log()
    return record


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_every_request_is_answered_with_vectors_or_an_error_and_none_hangs(outage):
    assert not outage.hung, f"clients still waiting for a reply: {outage.hung}"
    for name, outcomes in outage.outcomes.items():
        for sent, answered, outcome in outcomes:
            assert outcome == "vectors" or "BackendUnavailable" in outcome, f"{name}: {outcome}"
            assert answered - sent < TIMEOUT_MS / 1000, f"{name}: a reply after {answered - sent:.1f}s"
    errors = [o for outcomes in outage.outcomes.values() for _, _, o in outcomes if o != "vectors"]
    assert errors, "the kill must have failed some requests (else this test tests nothing)"


@pytest.mark.slow
def test_the_same_bridge_serves_again_within_10_s_of_the_kill(outage):
    for name, outcomes in outage.outcomes.items():
        back = min(answered for sent, answered, outcome in outcomes if sent > outage.killed_at and outcome == "vectors")
        assert back - outage.killed_at < BACK_WITHIN_S, f"{name}: vectors again only after {back - outage.killed_at:.1f}s"
    assert "restarting it now" in outage.log and "serves again" in outage.log
    assert "died (killed by signal 9 (SIGKILL))" in outage.log


@pytest.mark.slow
def test_nothing_of_the_old_tritonserver_is_left(outage):
    assert outage.old_processes and not alive(outage.old_processes), "the old tritonserver or its stubs live on"
    assert outage.new_processes, "the new tritonserver runs below the same bridge"
    assert outage.old_regions and not outage.old_regions & outage.new_regions, "old /dev/shm regions left"


@pytest.mark.slow
@pytest.mark.parametrize("bridge", ["A", "B"])
def test_ready_says_503_with_the_reason_while_triton_is_down_then_200(outage, bridge):
    seen = outage.ready[bridge]
    before = [(status, body) for at, status, body in seen if at < outage.killed_at]
    down = [body for at, status, body in seen if at > outage.killed_at and status == 503]
    assert before and all(status == 200 for status, _ in before), [b for b in before if b[0] != 200]
    assert down, "/ready never said 503 while the tritonserver was down"
    # A's own supervisor names the cause (the first replies may come from the failed gRPC calls, before it noticed)
    cause = "died (killed by signal 9 (SIGKILL)); it is being restarted" if bridge == "A" else "unavailable"
    assert any(cause in json.dumps(body) for body in down), down
    assert seen[-1][1] == 200


@pytest.mark.slow
@pytest.mark.parametrize("bridge", ["A", "B"])
def test_show_status_tells_the_truth_while_triton_is_down(outage, bridge):
    during = [triton["endpoints"][0] for at, triton in outage.states[bridge] if at > outage.killed_at]
    assert any(e["state"] == "unavailable" and e["last_error"] for e in during), during
    assert during[-1]["state"] == "ready"
    if bridge == "A":
        assert outage.states["A"][0][1]["restarts"] == 0 and outage.states["A"][-1][1]["restarts"] == 1


@pytest.mark.slow
def test_errors_while_triton_is_down_come_at_once_not_after_a_timeout(outage):
    outcomes = [o for outcomes in outage.outcomes.values() for o in outcomes]
    normal_s = max(answered - sent for sent, answered, outcome in outcomes
                   if outcome == "vectors" and answered < outage.killed_at)
    late = [(answered - sent, outcome) for sent, answered, outcome in outcomes
            if sent > outage.killed_at and outcome != "vectors" and answered - sent > normal_s + 1]
    assert not late, f"error replies slower than a normal reply ({normal_s:.2f}s): {late[:3]}"


@pytest.mark.slow
def test_a_stop_during_a_restart_exits_0_and_leaves_nothing(outage):
    assert outage.stop_status == 0 and "Traceback" not in outage.stop_log, outage.stop_log[-3000:]
    assert "restarting it in 1s (failure 2 in a row" in outage.stop_log, "died again within 60 s: the backoff begins"
    assert outage.restarting_processes, "the second restart was under way"
    wait_until(lambda: not alive(outage.restarting_processes), 30, "processes of the restart left behind")
    wait_until(lambda: not shm_regions(outage.bridge_pid), 10, "/dev/shm regions left behind")
