"""TritonPool alone: choosing the least busy endpoint, taking a failing or silent one out, retrying once, DNS changes,
and the service core's in-flight capacity following the endpoints that are up.

A unit test of one module: TritonBackend is replaced by a fake channel to a fake Triton whose answers the test
decides. The same behaviour against real tritonservers is tested in test_scaling.py, and across real network hops
(delay, partition, loss, DNS) in tests/network/.
"""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from bert_bridge.triton import pool as triton_pool
from bert_bridge.errors import BackendError, BackendOverloaded, BackendUnavailable
from bert_bridge.triton.pool import TritonPool, resolve_addresses

ROWS = np.zeros((2, 4), dtype=np.int32)


class FakeTriton:
    """One fake tritonserver, by address. ``down``: refuses like a dead Triton; ``silent``: answers nothing and closes
    nothing (a network partition) until ``heal()``, when the calls it held are answered late; ``gate``: an
    asyncio.Event that holds infer calls (not health checks) until set, like a slow model."""

    def __init__(self, url: str):
        self.url = url
        self.down = self.rejects = False
        self.gate = None
        self.healed = None  # an asyncio.Event while silent
        self.calls = 0
        self.channels: list = []

    @property
    def silent(self) -> bool:
        return self.healed is not None

    def go_silent(self) -> None:
        self.healed = asyncio.Event()

    def heal(self) -> None:
        self.healed.set()
        self.healed = None


class FakeBackend:
    """A channel to the FakeTriton at its url."""

    servers: dict = {}

    def __init__(self, *, url, model_name, timeout_s):
        self.url, self.model_name = url, model_name
        self.server = FakeBackend.servers.setdefault(url, FakeTriton(url))
        self.server.channels.append(self)
        self.details = {}
        self.closed = False

    async def _reach(self, timeout_s):
        if self.server.silent:
            try:
                await asyncio.wait_for(self.server.healed.wait(), timeout_s)
            except asyncio.TimeoutError:
                raise BackendOverloaded(f"Triton at {self.url} did not answer within {timeout_s}s") from None

    async def check_ready(self, timeout_s=2.0):
        await self._reach(timeout_s)
        if self.server.down:
            raise BackendUnavailable(f"Triton at {self.url} is unavailable")

    async def describe(self, timeout_s=10.0):
        await self.check_ready(timeout_s)
        self.details = {"url": self.url, "priority_levels": 2}
        return self.details

    async def infer(self, input_ids, input_mask, segment_ids, *, high_priority):
        server = self.server
        server.calls += 1
        if server.gate is not None:
            await server.gate.wait()
        await self._reach(300)
        if server.down:
            raise BackendUnavailable(f"Triton at {self.url} is unavailable (StatusCode.UNAVAILABLE)")
        if server.rejects:
            raise BackendError("Triton rejected the request")
        return np.full((len(input_ids), 1), float(self.url.rsplit(":", 1)[1]))

    async def close(self):
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    FakeBackend.servers = {}
    monkeypatch.setattr(triton_pool, "TritonBackend", FakeBackend)
    monkeypatch.setattr(triton_pool, "PROBE_FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(triton_pool, "PROBE_MAX_DELAY_S", 0.02)
    monkeypatch.setattr(triton_pool, "CHECK_EVERY_S", 0.02)
    return FakeBackend.servers


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


def test_a_ready_poll_leaves_a_busy_endpoint_in_service(fakes):
    """/ready asks with a short timeout; an endpoint in service that answers later than that but within the endpoint
    timeout is busy, not gone: it stays ready and /ready says so (a poll must not take it out and move its chunks)."""
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1"], endpoint_timeout_s=2.0)
        fake = fakes["127.0.0.1:1"]
        fake.go_silent()
        asyncio.get_running_loop().call_later(0.3, fake.heal)
        await pool.check_ready(timeout_s=0.05)
        states = pool.endpoint_states()
        await pool.close()
        return states

    [state] = run(scenario())
    assert state["state"] == "ready" and not state["last_error"], state


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
    assert all(channel.closed for channel in fakes["10.0.0.1:8001"].channels)  # a removed endpoint's is closed


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


def test_chunks_on_a_silent_endpoint_move_to_another_within_the_endpoint_timeout_and_are_answered_once(fakes):
    timeout_s = 0.3

    async def scenario():
        loop = asyncio.get_running_loop()
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"], endpoint_timeout_s=timeout_s)
        silent = fakes["127.0.0.1:1"]
        silent.go_silent()  # a partition: its calls and health checks hang, nothing is refused
        sent_at = loop.time()
        calls = [asyncio.create_task(pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(4)]
        results = await asyncio.gather(*calls)
        waited_s = loop.time() - sent_at
        states = {s["url"]: s for s in pool.endpoint_states()}
        held = silent.calls
        new_chunks = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(3)]
        first_channel = silent.channels[0]
        silent.heal()  # the held calls are answered now, late: nobody awaits them any more
        while pool.endpoint_states()[0]["state"] != "ready":
            await asyncio.sleep(0.01)
        back = [served_by(await pool.infer(ROWS, ROWS, ROWS, high_priority=False)) for _ in range(2)]
        await asyncio.sleep(0.05)
        old_channel_closed = first_channel.closed
        await pool.close()
        return [served_by(r) for r in results], waited_s, states, held, new_chunks, back, len(silent.channels), \
            old_channel_closed

    served, waited_s, states, held, new_chunks, back, channels, old_channel_closed = run(scenario())
    assert served == [2, 2, 2, 2] and held == 2  # two went to :1, waited for its silence, and moved to :2
    assert waited_s < timeout_s + 0.25
    silent_state = states["127.0.0.1:1"]
    assert silent_state["state"] == "unavailable" and silent_state["moved_chunks"] == 2
    assert "answered nothing for 0.3s" in silent_state["last_error"]
    assert new_chunks == [2, 2, 2]  # out: no new chunks while silent
    assert sorted(back) == [1, 2]  # used again once it answers
    assert channels >= 2 and old_channel_closed  # probed over a new channel; the stuck one closed once answered


def test_a_slow_endpoint_that_answers_health_checks_keeps_its_chunk(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"], endpoint_timeout_s=0.2)
        slow = fakes["127.0.0.1:1"]
        slow.gate = asyncio.Event()  # the model takes long; Triton still answers health checks
        call = asyncio.create_task(pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        await asyncio.sleep(0.6)  # three endpoint timeouts
        slow.gate.set()
        result = await call
        states = pool.endpoint_states()
        await pool.close()
        return served_by(result), states

    served, states = run(scenario())
    assert served == 1 and states[0]["state"] == "ready" and states[0]["moved_chunks"] == 0


def test_with_no_other_endpoint_a_chunk_on_a_silent_one_waits_for_its_answer(fakes):
    async def scenario():
        pool = await ready_pool(["127.0.0.1:1"], endpoint_timeout_s=0.1)
        fakes["127.0.0.1:1"].go_silent()
        call = asyncio.create_task(pool.infer(ROWS, ROWS, ROWS, high_priority=False))
        await asyncio.sleep(0.4)
        waiting = not call.done()
        state = pool.endpoint_states()[0]["state"]
        fakes["127.0.0.1:1"].heal()
        result = await call
        await pool.close()
        return waiting, state, served_by(result)

    assert run(scenario()) == (True, "unavailable", 1)


def test_the_services_work_in_flight_grows_with_the_endpoints_that_are_up(fakes):
    from test_adaptive_padding import served_as

    from bert_bridge.config import parse_args
    from bert_bridge.core.registry import ModelRegistry

    max_batch_size = 8  # chunks of 4 sentences, two chunks in flight per endpoint
    config = parse_args(["-max_batch_size", str(max_batch_size)])
    config = dataclasses.replace(config, models=(served_as(config),))

    async def in_flight_while_encoding(pool, sentences: int) -> tuple[int, list]:
        service = ModelRegistry.build(config, {"bert": pool}).default
        gate = asyncio.Event()
        for server in fakes.values():
            server.gate = gate
        encoding = asyncio.create_task(service.encode([f"sentence {i}" for i in range(sentences)]))
        await asyncio.sleep(0.1)
        held = sum(state["in_flight"] for state in pool.endpoint_states())
        gate.set()
        result = await encoding
        return held, result.embeddings[:, 0].tolist()

    async def scenario():
        one = await ready_pool(["127.0.0.1:1"])
        alone = await in_flight_while_encoding(one, 64)
        await one.close()
        three = await ready_pool(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        together = await in_flight_while_encoding(three, 64)
        fakes["127.0.0.1:3"].down = True
        while three.endpoints_up != 2:
            await asyncio.sleep(0.01)
        after_one_left = await in_flight_while_encoding(three, 64)
        await three.close()
        return alone, together, after_one_left

    (alone, rows_alone), (together, rows_together), (after, _) = run(scenario())
    assert (alone, together, after) == (2, 6, 4)  # chunks in flight: two per endpoint that is up
    assert set(rows_alone) == {1.0} and set(rows_together) == {1.0, 2.0, 3.0}


def test_an_answer_is_taken_at_once_not_at_the_next_health_check(fakes, monkeypatch):
    monkeypatch.setattr(triton_pool, "CHECK_EVERY_S", 1.0)

    async def scenario():
        loop = asyncio.get_running_loop()
        pool = await ready_pool(["127.0.0.1:1", "127.0.0.1:2"], endpoint_timeout_s=10)
        started = loop.time()
        for _ in range(5):
            await pool.infer(ROWS, ROWS, ROWS, high_priority=False)
        took_s = loop.time() - started
        await pool.close()
        return took_s

    assert run(scenario()) < 0.5
