"""Which request's chunk goes to Triton next: round-robin between clients, then between a client's requests.

The service core cuts every request into chunks (service.py) and sends a chunk only when this scheduler grants it a
slot. At most ``capacity`` sentences are in flight to Triton at once: enough that the model instances never wait for
work, few enough that a newcomer's chunk is never queued behind a
big request's thousands of sentences. When a slot frees, the next chunk comes from the next client in turn, and
within a client from its next request in turn; so one client's 5,000 sentences and another's 17 advance chunk by
chunk, side by side, and a client cannot get more than its share by sending many requests at once.

The bound. Let ``t`` be the time Triton takes for one chunk under load (chunks hold about the same number of token
positions, chunking.py), ``C`` the sentences in flight (``capacity``) and ``s`` the sentences per chunk. A request
of ``b`` chunks arriving while ``n`` other clients have work waits at most for the chunks already in flight
(``C / s`` of them, queued in Triton ahead of its first chunk) plus one turn of every other client per chunk of its
own::

    latency <= (C / s + (n + 1) * b) * t

With the defaults (``C`` = max_batch_size = 256; chunks of 1,024 positions hold 25 sentences of 40 tokens) that is
about 10 + 2b chunk times next to one big request, and no longer depends on the big request's size. With ``N``
Triton replicas up, the service core sets ``C`` to N times one replica's share (``resize``, service.py), and the
replicas compute N chunks at a time: ``t`` is then the time per chunk of all of them together (a replica's chunk
time divided by N), and the bound reads the same. Requests of at
most ``-priority_batch_size`` sentences are urgent, as the original's priority made them: their chunks go before
every client's turn, so they wait only for the chunks already in flight (``C / s``). Few chunks are kept in flight
for that reason; Triton has no priority levels (they stalled its batcher: exporter/triton_config.py).

Long documents. A chunk holds one sentence when that sentence alone fills more than a chunk's positions (a long
context model's 8,192 tokens); counting sentences, ``C`` such chunks -- hundreds of chunk times -- could be in flight
ahead of a newcomer. ``position_capacity`` bounds the token positions in flight as well (the service sets it to
16 chunks' worth), so ``C / s`` above stays about 16 chunk times whatever the lengths; short sentences fill the
sentence budget first and are not affected.

Cancellation: a chunk waiting for its slot whose task is cancelled (the client left, the HTTP connection closed,
shutdown gave up) leaves the queue at once and never reaches Triton. A chunk already sent keeps its slot until
Triton answers (the service core lets such calls finish: see service.py), so ``capacity`` stays what Triton really
has in hand.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Hashable, Optional

__all__ = ["FairScheduler"]

_URGENT = object()  # the lane of urgent chunks: always served first


class FairScheduler:
    """Grants chunks a slot, at most ``capacity`` sentences and ``position_capacity`` token positions at a time; a
    chunk larger than the whole capacity still goes alone. ``await acquire(...)`` waits for the chunk's turn;
    ``release(sentences, positions)`` once Triton answered it. Not thread-safe: the bridge has one event loop."""

    def __init__(self, *, capacity: int, position_capacity: Optional[int] = None):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.position_capacity = position_capacity  # None: sentences alone count
        self.in_flight = 0
        self.positions_in_flight = 0
        # client -> request -> chunks waiting (future, sentences, positions), each level in turn order: served from the
        # front, moved to the back after its turn.
        self._waiting: OrderedDict[Hashable, OrderedDict[Hashable, deque]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """Chunks waiting for a slot."""
        return sum(len(chunks) for requests in self._waiting.values() for chunks in requests.values())

    async def acquire(self, *, client: Hashable, request: Hashable, sentences: int, positions: int = 0,
                      urgent: bool = False) -> None:
        """Wait for this chunk's turn; its sentences and positions count as in flight until ``release``. Cancelled
        while waiting, the chunk leaves the queue and holds nothing. An ``urgent`` chunk (a request of at most
        -priority_batch_size sentences: the original's priority) goes before every client's turn."""
        if urgent:
            client = _URGENT
        if self._fits(sentences, positions) and (not self._waiting or (urgent and _URGENT not in self._waiting)):
            self._take(sentences, positions)
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, OrderedDict()).setdefault(request, deque()).append(
            (granted, sentences, positions))
        if urgent:
            self._waiting.move_to_end(_URGENT, last=False)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # its turn came, but the task was cancelled meanwhile
                self.release(sentences, positions)
            else:
                self._forget(client, request, granted)
            raise

    def release(self, sentences: int, positions: int = 0) -> None:
        self.in_flight -= sentences
        self.positions_in_flight -= positions
        self._grant()

    def resize(self, capacity: int, position_capacity: Optional[int] = None) -> None:
        """New capacities (the Triton endpoints that are up changed): more room is granted at once to the waiting
        chunks, in turn; less takes effect as the chunks in flight are answered (none is taken back)."""
        if capacity < 1 or (position_capacity is not None and position_capacity < 1):
            raise ValueError(f"capacities must be at least 1, not {capacity} and {position_capacity}")
        self.capacity, self.position_capacity = capacity, position_capacity
        self._grant()

    def _take(self, sentences: int, positions: int) -> None:
        self.in_flight += sentences
        self.positions_in_flight += positions

    def _fits(self, sentences: int, positions: int) -> bool:
        if self.in_flight == 0 and self.positions_in_flight == 0:
            return True
        return self.in_flight + sentences <= self.capacity and (
            self.position_capacity is None or self.positions_in_flight + positions <= self.position_capacity)

    def _grant(self) -> None:
        """Hand freed capacity to the waiting chunks, strictly in turn."""
        while self._waiting:
            client, requests = next(iter(self._waiting.items()))
            request, chunks = next(iter(requests.items()))
            granted, sentences, positions = chunks[0]
            cancelled = granted.done()  # its waiter was cancelled and has not left the queue yet: skip it
            if not cancelled and not self._fits(sentences, positions):
                return
            chunks.popleft()
            if chunks:
                requests.move_to_end(request)
            else:
                del requests[request]
            if not requests:
                del self._waiting[client]
            elif client is not _URGENT:  # the urgent lane stays first
                self._waiting.move_to_end(client)
            if cancelled:
                continue
            self._take(sentences, positions)
            granted.set_result(None)

    def _forget(self, client: Hashable, request: Hashable, granted: asyncio.Future) -> None:
        requests = self._waiting.get(client)
        chunks = requests.get(request) if requests else None
        if chunks is None:
            return
        for entry in chunks:
            if entry[0] is granted:
                chunks.remove(entry)
                break
        if not chunks:
            del requests[request]
            if not requests:
                del self._waiting[client]
        self._grant()  # the cancelled chunk may have been the one blocking the head of the line
