"""The fair scheduler alone (bridge/core/scheduler.py): turn order, capacity, cancellation. No server: chunks are coroutines
that hold their slot until the test lets them finish."""
from __future__ import annotations

import asyncio

import pytest

from bert_bridge.core.scheduler import FairScheduler


class Recorder:
    """Runs chunks through the scheduler; each holds its slot until ``finish_one`` releases the oldest running one."""

    def __init__(self, scheduler: FairScheduler):
        self.scheduler = scheduler
        self.started: list[str] = []
        self._running: list[asyncio.Event] = []

    async def chunk(self, client, request, name: str, sentences: int = 1, urgent: bool = False,
                    positions: int = 0) -> None:
        await self.scheduler.acquire(client=client, request=request, sentences=sentences, positions=positions,
                                     urgent=urgent)
        try:
            self.started.append(name)
            done = asyncio.Event()
            self._running.append(done)
            await done.wait()
        finally:
            self.scheduler.release(sentences, positions)

    async def finish_one(self) -> None:
        self._running.pop(0).set()
        for _ in range(3):  # let the finished chunk release and the next one start
            await asyncio.sleep(0)


def spawn(recorder: Recorder, client, request, names: list[str], sentences: int = 1,
          urgent: bool = False) -> list[asyncio.Task]:
    return [asyncio.ensure_future(recorder.chunk(client, request, name, sentences, urgent)) for name in names]


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_newcomer_is_served_next_turn_not_after_the_big_request():
    async def scenario():
        recorder = Recorder(FairScheduler(capacity=2))
        big = spawn(recorder, "A", "a1", [f"A{i}" for i in range(50)])
        await settle()
        assert recorder.started == ["A0", "A1"]  # the capacity is full
        small = spawn(recorder, "B", "b1", ["B0", "B1"])
        await settle()
        for _ in range(4):
            await recorder.finish_one()
        assert recorder.started == ["A0", "A1", "A2", "B0", "A3", "B1"]
        for task in big + small:
            task.cancel()
        await asyncio.gather(*big, *small, return_exceptions=True)

    asyncio.run(scenario())


def test_turns_go_round_clients_first_then_a_clients_requests():
    async def scenario():
        recorder = Recorder(FairScheduler(capacity=1))
        blocker = spawn(recorder, "X", "x", ["X"])
        await settle()
        tasks = (spawn(recorder, "A", "a1", ["a1.0", "a1.1"]) + spawn(recorder, "A", "a2", ["a2.0", "a2.1"])
                 + spawn(recorder, "B", "b1", ["b1.0", "b1.1"]))
        await settle()
        for _ in range(6):
            await recorder.finish_one()
        # A and B alternate; A's two requests alternate within A's turns
        assert recorder.started == ["X", "a1.0", "b1.0", "a2.0", "b1.1", "a1.1", "a2.1"]
        await recorder.finish_one()
        await asyncio.gather(*blocker, *tasks)
        assert recorder.scheduler.in_flight == 0

    asyncio.run(scenario())


def test_capacity_counts_sentences_and_a_chunk_larger_than_it_still_goes_alone():
    async def scenario():
        scheduler = FairScheduler(capacity=10)
        recorder = Recorder(scheduler)
        tasks = spawn(recorder, "A", "a", ["six", "five"], sentences=6) + spawn(recorder, "B", "b", ["huge"], 25)
        await settle()
        assert recorder.started == ["six"] and scheduler.in_flight == 6
        await recorder.finish_one()
        assert recorder.started == ["six", "five"]
        await recorder.finish_one()
        assert recorder.started == ["six", "five", "huge"] and scheduler.in_flight == 25
        await recorder.finish_one()
        await asyncio.gather(*tasks)
        assert scheduler.in_flight == 0

    asyncio.run(scenario())


def test_cancelled_chunks_leave_the_queue_at_once_and_free_their_turn():
    async def scenario():
        scheduler = FairScheduler(capacity=1)
        recorder = Recorder(scheduler)
        first = spawn(recorder, "A", "a", ["A0"])
        await settle()
        abandoned = spawn(recorder, "A", "a", [f"A{i}" for i in range(1, 100)])
        other = spawn(recorder, "B", "b", ["B0"])
        await settle()
        assert scheduler.waiting == 100
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
        assert scheduler.waiting == 1  # only B's chunk still waits; nothing of A's will ever start
        await recorder.finish_one()
        assert recorder.started == ["A0", "B0"]
        await recorder.finish_one()
        await asyncio.gather(*first, *other)
        assert scheduler.in_flight == 0 and scheduler.waiting == 0

    asyncio.run(scenario())


def test_a_chunk_cancelled_right_after_its_turn_came_gives_the_slot_back():
    async def scenario():
        scheduler = FairScheduler(capacity=1)
        recorder = Recorder(scheduler)
        first = spawn(recorder, "A", "a", ["A0"])
        await settle()
        second = spawn(recorder, "B", "b", ["B0"])
        await settle()
        recorder._running.pop(0).set()  # A0 finishes and hands its slot to B0 ...
        await asyncio.sleep(0)
        second[0].cancel()  # ... whose task is cancelled before it ran
        await asyncio.gather(*first, *second, return_exceptions=True)
        assert second[0].cancelled()
        assert scheduler.in_flight == 0 and scheduler.waiting == 0

    asyncio.run(scenario())


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        FairScheduler(capacity=0)


def test_urgent_chunks_go_before_every_turn_and_take_turns_among_themselves():
    """Requests of at most -priority_batch_size sentences: the original's priority, now kept in the bridge."""
    async def scenario():
        recorder = Recorder(FairScheduler(capacity=2))
        tasks = spawn(recorder, "A", "a1", [f"A{i}" for i in range(10)])
        tasks += spawn(recorder, "B", "b1", [f"B{i}" for i in range(10)])
        await settle()
        tasks += spawn(recorder, "C", "c1", ["C0", "C1"], urgent=True)
        tasks += spawn(recorder, "D", "d1", ["D0"], urgent=True)
        await settle()
        for _ in range(5):
            await recorder.finish_one()
        assert recorder.started == ["A0", "A1", "C0", "D0", "C1", "A2", "B0"]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_larger_capacity_starts_waiting_chunks_in_turn_and_a_smaller_one_takes_nothing_back():
    async def scenario():
        scheduler = FairScheduler(capacity=2)
        recorder = Recorder(scheduler)
        big = spawn(recorder, "A", "a1", [f"A{i}" for i in range(10)])
        small = spawn(recorder, "B", "b1", ["B0", "B1"])
        await settle()
        assert recorder.started == ["A0", "A1"]
        scheduler.resize(6)  # two more endpoints came up: four more start at once, still in turn
        await settle()
        assert recorder.started == ["A0", "A1", "A2", "B0", "A3", "B1"]
        scheduler.resize(2)  # two went away: the six in flight stay; nothing new starts until only one is left
        await settle()
        for _ in range(4):
            await recorder.finish_one()
        assert len(recorder.started) == 6 and scheduler.in_flight == 2
        await recorder.finish_one()
        assert recorder.started[6:] == ["A4"] and scheduler.in_flight == 2
        with pytest.raises(ValueError):
            scheduler.resize(0)
        for task in big + small:
            task.cancel()
        await asyncio.gather(*big, *small, return_exceptions=True)

    asyncio.run(scenario())


def test_long_documents_count_in_positions_not_only_sentences():
    """Chunks of one 8,000-token document each would fit the sentence budget by the hundred; the position budget
    keeps two in flight, so a newcomer's chunk waits for those two, not for all of them."""
    async def scenario():
        scheduler = FairScheduler(capacity=256, position_capacity=16_384)
        recorder = Recorder(scheduler)
        long = [asyncio.ensure_future(recorder.chunk("big", "r", f"doc{i}", positions=8_000)) for i in range(6)]
        await settle()
        assert recorder.started == ["doc0", "doc1"]
        short = asyncio.ensure_future(recorder.chunk("small", "s", "short", sentences=25, positions=1_000))
        await settle()
        await recorder.finish_one()  # doc0 answered: the big client's turn came first
        assert recorder.started == ["doc0", "doc1", "doc2"]
        await recorder.finish_one()  # doc1 answered: now the newcomer's
        assert recorder.started == ["doc0", "doc1", "doc2", "short"]
        while not all(task.done() for task in long + [short]):
            await recorder.finish_one()
        assert scheduler.in_flight == 0 and scheduler.positions_in_flight == 0

    asyncio.run(scenario())


def test_a_document_longer_than_the_position_budget_still_goes_alone():
    async def scenario():
        scheduler = FairScheduler(capacity=256, position_capacity=1_024)
        recorder = Recorder(scheduler)
        tasks = [asyncio.ensure_future(recorder.chunk("c", "r", name, positions=8_000)) for name in ("a", "b")]
        await settle()
        assert recorder.started == ["a"]
        while not all(task.done() for task in tasks):
            await recorder.finish_one()
        assert recorder.started == ["a", "b"]

    asyncio.run(scenario())
