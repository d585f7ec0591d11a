"""TritonPool alone: choosing the least busy endpoint, taking a failing one out, retrying once, DNS changes.

A unit test of one module: TritonBackend is replaced by a fake whose answers the test decides. The same behaviour
against real tritonservers is tested in test_scaling.py.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bert_bridge.triton import pool as triton_pool
from bert_bridge.errors import BackendError, BackendUnavailable
from bert_bridge.triton.pool import TritonPool, resolve_addresses

ROWS = np.zeros((2, 4), dtype=np.int32)


class FakeBackend:
    """Answers infer with its own address; ``down`` makes it fail like a dead Triton."""

    instances: dict = {}

    def __init__(self, *, url, model_name, timeout_s):
        self.url, self.model_name = url, model_name
        self.details = {}
        self.down = False
        self.rejects = False
        self.gate = None  # an asyncio.Event that holds infer calls until set
        self.calls = 0
        self.closed = False
        FakeBackend.instances[url] = self

    async def check_ready(self, timeout_s=2.0):
        if self.down:
            raise BackendUnavailable(f"Triton at {self.url} is unavailable")

    async def describe(self):
        await self.check_ready()
        self.details = {"url": self.url, "priority_levels": 2}
        return self.details

    async def infer(self, input_ids, input_mask, segment_ids, *, high_priority):
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise BackendUnavailable(f"Triton at {self.url} is unavailable (StatusCode.UNAVAILABLE)")
        if self.rejects:
            raise BackendError("Triton rejected the request")
        return np.full((len(input_ids), 1), float(self.url.rsplit(":", 1)[1]))

    async def close(self):
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    FakeBackend.instances = {}
    monkeypatch.setattr(triton_pool, "TritonBackend", FakeBackend)
    monkeypatch.setattr(triton_pool, "PROBE_FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(triton_pool, "PROBE_MAX_DELAY_S", 0.02)
    return FakeBackend.instances


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


async def ready_pool(targets, **kwargs) -> TritonPool:
    pool = TritonPool(targets=targets, model_name="bert", timeout_s=5, **kwargs)
    await pool.wait_until_ready(timeout_s=5)
    while not all(state["state"] == "ready" for state in pool.endpoint_states()):
        await asyncio.sleep(0.01)
    return pool


def served_by(result) -> int:
    return int(result[0, 0])


def test_concurrent_chunks_go_to_the_endpoint_with_fewest_in_flight(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        gate = asyncio.Event()
        for fake in fakes.values():
            fake.gate = gate
        calls = [asyncio.create_task(pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(6)]
        await asyncio.sleep(0.05)
        in_flight = [state["in_flight"] for state in pool.endpoint_states()]
        gate.set()
        results = await asyncio.gather(*calls)
        states = pool.endpoint_states()
        await pool.close()
        return in_flight, [served_by(r) for r in results], states

    in_flight, served, states = run(scenario())
    assert in_flight == [2, 2, 2]
    assert sorted(served) == [1, 1, 2, 2, 3, 3]
    assert [s["served_chunks"] for s in states] == [2, 2, 2] and all(s["in_flight"] == 0 for s in states)


def test_one_at_a_time_alternates_between_idle_endpoints(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"])
        served = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=True)) for _ in range(6)]
        details = await pool.describe()
        await pool.close()
        return served, details

    served, details = run(scenario())
    assert served == [1, 2, 1, 2, 1, 2]
    assert details["priority_levels"] == 2


def test_a_chunk_failing_on_a_dead_endpoint_is_retried_once_elsewhere_and_the_endpoint_comes_back(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"])
        fakes["127.0.0.1:1"].down = True
        # The first chunk goes to :1 (least recently chosen), fails there, and is answered by :2.
        first = served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        state_after_failure = pool.endpoint_states()[0]
        later = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(3)]
        calls_while_down = fakes["127.0.0.1:1"].calls
        fakes["127.0.0.1:1"].down = False
        while pool.endpoint_states()[0]["state"] != "ready":  # the probe finds it again
            await asyncio.sleep(0.01)
        back = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(2)]
        await pool.close()
        return first, state_after_failure, later, calls_while_down, back

    first, state, later, calls_while_down, back = run(scenario())
    assert first == 2
    assert state["state"] == "unavailable" and state["failed_chunks"] == 1 and "unavailable" in state["last_error"]
    assert later == [2, 2, 2] and calls_while_down == 1  # taken out: no more chunks while down
    assert sorted(back) == [1, 2]


def test_when_every_endpoint_is_down_the_caller_gets_backend_unavailable(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"])
        for fake in fakes.values():
            fake.down = True
        with pytest.raises(BackendUnavailable) as failure:
            await pool.infer(ROWS, ROWS, ROWS, high_priority=False)
        with pytest.raises(BackendUnavailable) as not_ready:
            await pool.check_ready()
        with pytest.raises(BackendUnavailable, match="no Triton endpoint describes"):
            await pool.describe()
        calls = sum(fake.calls for fake in fakes.values())
        await pool.close()
        return failure.value.message, not_ready.value.message, calls

    message, not_ready, calls = run(scenario())
    assert calls == 2  # tried once, retried once, no more
    assert "no Triton endpoint could serve" in message and "127.0.0.1:1" in message and "127.0.0.1:2" in message
    assert "127.0.0.1:1" in not_ready and "127.0.0.1:2" in not_ready


def test_a_rejected_request_is_not_retried(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"])
        for fake in fakes.values():
            fake.rejects = True
        with pytest.raises(BackendError):
            await pool.infer(ROWS, ROWS, ROWS, high_priority=False)
        states = pool.endpoint_states()
        await pool.close()
        return states

    states = run(scenario())
    assert sum(s["failed_chunks"] for s in states) == 1 and all(s["state"] == "ready" for s in states)


def test_a_name_is_resolved_again_and_its_endpoints_follow_the_addresses(fakes):
    dns = {"triton-grpc": ["10.0.0.1:8001", "10.0.0.2:8001"]}

    async def resolve(host, port):
        assert port == 8001
        return dns[host]

    async def scenario():
        pool = await ready_pool(["triton-grpc:8001"], resolve=resolve, refresh_s=0.02)
        first = [s["url"] for s in pool.endpoint_states()]
        dns["triton-grpc"] = ["10.0.0.2:8001", "10.0.0.3:8001"]  # a pod replaced
        while "10.0.0.3:8001" not in pool.addresses:
            await asyncio.sleep(0.01)
        second = [s["url"] for s in pool.endpoint_states()]
        await pool.close()
        return first, second

    first, second = run(scenario())
    assert first == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert second == ["10.0.0.2:8001", "10.0.0.3:8001"]
    assert fakes["10.0.0.1:8001"].closed  # a removed endpoint's channel is closed


def test_a_name_that_stops_resolving_keeps_its_endpoints(fakes):
    answers = [["10.0.0.1:8001"]]

    async def resolve(host, port):
        if not answers:
            raise BackendUnavailable(f"cannot resolve Triton host '{host}'")
        return answers.pop(0)

    async def scenario():
        pool = await ready_pool(["triton-grpc:8001"], resolve=resolve, refresh_s=0.01)
        await asyncio.sleep(0.1)
        served = served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        await pool.close()
        return served, answers

    assert run(scenario()) == (8001, [])


def test_resolving_literals_and_localhost():
    assert run(resolve_addresses("127.0.0.1", 8001)) == ["127.0.0.1:8001"]
    assert run(resolve_addresses("::1", 8001)) == ["[::1]:8001"]
    assert run(resolve_addresses("localhost", 8001)) == ["127.0.0.1:8001"]  # one replica, not two families
    with pytest.raises(BackendUnavailable, match="cannot resolve"):
        run(resolve_addresses("no-such-host.invalid", 8001))


def test_an_endpoint_that_dies_while_idle_is_taken_out_before_a_chunk_fails_on_it(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"], refresh_s=0.02)
        fakes["127.0.0.1:1"].down = True
        while pool.endpoint_states()[0]["state"] != "unavailable":
            await asyncio.sleep(0.01)
        served = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(3)]
        states = pool.endpoint_states()
        await pool.close()
        return served, states

    served, states = run(scenario())
    assert served == [2, 2, 2] and states[0]["failed_chunks"] == 0 and states[0]["last_error"]


def test_a_suspended_pool_fails_every_chunk_at_once_with_the_reason_until_triton_is_back(fakes):
    reason = "the embedded tritonserver died (killed by signal 9 (SIGKILL)); it is being restarted"

    async def scenario():
        pool = await ready_pool(["127.0.0.1:1"])
        backend = fakes["127.0.0.1:1"]
        backend.down = True
        pool.suspend(reason)
        with pytest.raises(BackendUnavailable) as refused:
            await pool.infer(ROWS, ROWS, ROWS, high_priority=False)
        with pytest.raises(BackendUnavailable) as not_ready:
            await pool.check_ready()
        states_down = pool.endpoint_states()
        calls_while_down = backend.calls
        resuming = asyncio.ensure_future(pool.resume(timeout_s=5))
        await asyncio.sleep(0.3)
        waited = not resuming.done()  # it waits until Triton confirms the model is ready
        backend.down = False
        await resuming
        served = served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        states_up = pool.endpoint_states()
        await pool.close()
        return refused.value.message, not_ready.value.message, states_down, calls_while_down, waited, served, states_up

    refused, not_ready, states_down, calls, waited, served, states_up = run(scenario())
    assert refused == reason and not_ready == reason and calls == 0
    assert [(s["state"], s["last_error"]) for s in states_down] == [("unavailable", reason)]
    assert waited and served == 1 and states_up[0]["state"] == "ready"


def test_a_restarted_triton_on_a_new_port_replaces_the_old_endpoint(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1"])
        pool.suspend("restarting")
        await pool.resume(targets=["127.0.0.1:2"], timeout_s=5)
        served = served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        urls = [s["url"] for s in pool.endpoint_states()]
        url = pool.url
        await pool.close()
        return served, urls, url

    assert run(scenario()) == (2, ["127.0.0.1:2"], "127.0.0.1:2")
