"""The soak's clients: threads that send their own fixed-seed stream of requests until the deadline, check every
reply row against its sentence's reference vector, and count what happened in one ``Tally``.

Client ``i`` is of kind ``KINDS[i % 4]``:

- ``blocking``: ``BertClient.encode`` (a request above max_batch_size is streamed in chunks by the client).
- ``async``: 1 to 3 requests at once, either ``encode(blocking=False)`` each and then ``fetch()``, or one
  ``encode_async`` over them (chosen by the seed, half and half). Each is one request however large.
- ``clone``: a blocking sender plus a clone, a second ``BertClient`` with the sender's identity that only
  ``listen()``s: the original's multicast. The clone must receive every reply the sender receives, right.
- ``http``: ``HTTPBertClient.encode`` on the server's -http_port; a ``blocking`` client when it has none.

Threads, not processes: the service is the bottleneck (a few hundred sentences/s on a CPU); a client's own work per
reply is waiting on a socket and one vectorized numpy comparison, both outside the GIL, so 16 threads keep 16
requests in flight as 16 processes would, without 16 interpreters starting on the machine the server runs on.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from bert_bridge.errors import Overloaded

from .soak_workload import RequestPlan, size_class_of

KINDS = ("blocking", "async", "clone", "http")


def _kinds(error_class: type) -> set[str]:
    return {error_class.kind}.union(*(_kinds(subclass) for subclass in error_class.__subclasses__()))


# Error kinds that say "busy, try later" (bert_bridge.errors.Overloaded and its subclasses, HTTP 429): the service
# answered, so they are counted as refused, apart from unexpected errors; the client waits a second, as Retry-After.
OVERLOAD_TYPES = _kinds(Overloaded) | {"HTTP 429"}
RETRY_AFTER_S = 1.0
CLONE_POLL_MS = 1000
ERROR_SAMPLES = 10


@dataclass(frozen=True)
class Checker:
    """Rows of a reply against the reference rows of the sentences asked for (max abs difference per row)."""

    references: np.ndarray
    tolerance: float

    def mismatched_rows(self, vectors, indices: np.ndarray) -> int:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(indices), self.references.shape[1]):
            return len(indices)
        worst = np.abs(vectors - self.references[indices]).max(axis=1)
        return int((~(worst <= self.tolerance)).sum())  # NaN is a mismatch too


@dataclass
class Tally:
    """Every outcome of every request, per client kind; latencies per size class. Thread-safe."""

    counts: dict = field(default_factory=lambda: defaultdict(Counter))
    latencies_s: dict = field(default_factory=lambda: defaultdict(list))
    error_types: Counter = field(default_factory=Counter)
    error_samples: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def replied(self, kind: str, size: int, latency_s: float, mismatched_rows: int) -> None:
        with self._lock:
            c = self.counts[kind]
            c["requests"] += 1
            c["sentences"] += size
            c["mismatched_rows"] += mismatched_rows
            c["mismatched_requests"] += bool(mismatched_rows)
            self.latencies_s[size_class_of(size)].append(latency_s)

    def lost(self, kind: str, size: int) -> None:
        with self._lock:
            self.counts[kind]["lost"] += 1
            self.counts[kind]["lost_sentences"] += size

    def error(self, kind: str, size: int, error: Exception) -> None:
        """A server error reply, or an exception the client was not expected to raise."""
        error_type = getattr(error, "type", None) or type(error).__name__
        refused = error_type in OVERLOAD_TYPES
        with self._lock:
            self.counts[kind]["refused" if refused else "errors"] += 1
            self.error_types[error_type] += 1
            if not refused and len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(f"{kind}, {size} sentences: {type(error).__name__}: {error}"[:500])
        if refused:
            time.sleep(RETRY_AFTER_S)

    def abandoned(self, kind: str, count: int) -> None:
        """Requests sent but given up by the client's own loop when another request failed."""
        with self._lock:
            self.counts[kind]["abandoned_after_error"] += count

    def multicast(self, *, received: int = 0, mismatched: int = 0, lost: int = 0) -> None:
        with self._lock:
            c = self.counts["clone"]
            c["multicast_received"] += received
            c["multicast_mismatched"] += mismatched
            c["multicast_lost"] += lost

    def total(self, key: str) -> int:
        with self._lock:
            return sum(c[key] for c in self.counts.values())


class SoakClients:
    """``num_client`` client threads (plus a listening clone per clone client), started together by ``start`` and
    sending until ``stop_at`` (time.monotonic()); ``join`` waits for their last replies."""

    def __init__(self, *, num_client: int, ip: str, port: int, port_out: int, http_port: int | None,
                 sentences: list[str], plan: RequestPlan, checker: Checker, timeout_s: float, seed: int,
                 tally: Tally):
        self.sentences, self.plan, self.checker, self.tally, self.seed = sentences, plan, checker, tally, seed
        self.ip, self.port, self.port_out, self.http_port = ip, port, port_out, http_port
        self.timeout_ms = int(timeout_s * 1000)
        self.stop_at = float("inf")
        self.kinds = [KINDS[i % len(KINDS)] if KINDS[i % len(KINDS)] != "http" or http_port else "blocking"
                      for i in range(num_client)]
        self._closers: list[Callable] = []
        self.threads: list[threading.Thread] = []
        # Connected before the clock starts: every constructor does its SHOW_CONFIG round trip now.
        for index, kind in enumerate(self.kinds):
            work = getattr(self, f"_{kind}")(index)
            self.threads.append(threading.Thread(target=work, name=f"soak-{kind}-{index}", daemon=True))

    @property
    def counts_by_kind(self) -> Counter:
        return Counter(self.kinds)

    def start(self, stop_at: float) -> None:
        self.stop_at = stop_at
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        for close in self._closers:
            close()

    # -- the kinds --------------------------------------------------------------------------------------------------

    def _bert_client(self, **kwargs):
        from bert_serving.client import BertClient

        client = BertClient(ip=self.ip, port=self.port, port_out=self.port_out, timeout=self.timeout_ms,
                            check_length=False, **kwargs)
        self._closers.append(client.close)
        return client

    def _blocking(self, index: int) -> Callable:
        client = self._bert_client()
        return self._loop("blocking", index, lambda requests: self._encode_blocking("blocking", client.encode,
                                                                                    next(requests)))

    def _http(self, index: int) -> Callable:
        from bert_serving.client import HTTPBertClient

        client = HTTPBertClient(ip=self.ip, port=self.http_port, timeout=self.timeout_ms)
        return self._loop("http", index, lambda requests: self._encode_blocking("http", client.encode,
                                                                                next(requests)))

    def _async(self, index: int) -> Callable:
        client = self._bert_client()
        choice = np.random.default_rng([self.seed, index, 1])

        def step(requests: Iterator[np.ndarray]) -> None:
            batches = [next(requests) for _ in range(1 + int(choice.integers(3)))]
            if choice.random() < 0.5:
                self._encode_then_fetch(client, batches)
            else:
                self._encode_async(client, batches)

        return self._loop("async", index, step)

    def _clone(self, index: int) -> Callable:
        identity = f"soak-clone-{index}-{uuid.uuid4()}"
        # The listening clone first: its constructor's round trip proves its subscription is in place before the
        # sender's first request, so it cannot miss a reply.
        listener = self._bert_client(identity=identity)
        listener.timeout = CLONE_POLL_MS
        sender = self._bert_client(identity=identity)
        group = CloneGroup(self.checker, self.tally)
        listening = threading.Thread(target=group.listen, args=(listener,), name=f"soak-listener-{index}", daemon=True)

        def step(requests: Iterator[np.ndarray]) -> None:
            indices = next(requests)
            chunks = group.expect(indices, sender.max_batch_size)
            if not self._encode_blocking("clone", sender.encode, indices):
                group.forgive(chunks)

        work = self._loop("clone", index, step)

        def run() -> None:
            listening.start()
            try:
                work()
            finally:
                group.sender_done()
                listening.join()

        return run

    # -- one request or a few ---------------------------------------------------------------------------------------

    def _loop(self, kind: str, index: int, step: Callable) -> Callable:
        def run() -> None:
            requests = self.plan.requests(index)
            while time.monotonic() < self.stop_at:
                try:
                    step(requests)
                except Exception as e:  # a client-side failure nobody expected: counted, and the client goes on
                    self.tally.error(kind, 0, e)
                    time.sleep(RETRY_AFTER_S)  # not a hot loop if it keeps failing (e.g. the HTTP port is gone)

        return run

    def _text(self, indices: np.ndarray) -> list[str]:
        return [self.sentences[i] for i in indices]

    def _encode_blocking(self, kind: str, encode: Callable, indices: np.ndarray) -> bool:
        """One blocking encode, counted; whether it was answered with vectors."""
        from bert_serving.client import BertTimeoutError, ServerError

        started = time.perf_counter()
        try:
            vectors = encode(self._text(indices))
        except BertTimeoutError:
            self.tally.lost(kind, len(indices))
            return False
        except ServerError as e:
            self.tally.error(kind, len(indices), e)
            return False
        self.tally.replied(kind, len(indices), time.perf_counter() - started,
                           self.checker.mismatched_rows(vectors, indices))
        return True

    def _encode_then_fetch(self, client, batches: list[np.ndarray]) -> None:
        """``encode(blocking=False)`` for each batch, then ``fetch()`` the replies in whatever order they come."""
        from bert_serving.client import BertTimeoutError, ServerError

        first = client.status["num_request"] + 1  # request ids are consecutive: batch j gets first + j
        sent_at: dict[int, float] = {}
        waiting: set[int] = set()
        for j, batch in enumerate(batches):
            try:
                client.encode(self._text(batch), blocking=False)
            except BertTimeoutError:  # could not even be sent within the timeout
                self.tally.lost("async", len(batch))
                continue
            sent_at[first + j] = time.perf_counter()
            waiting.add(first + j)
        while waiting:
            try:
                for response in client.fetch():
                    batch = batches[response.id - first]
                    waiting.discard(response.id)
                    self.tally.replied("async", len(batch), time.perf_counter() - sent_at[response.id],
                                       self.checker.mismatched_rows(response.embedding, batch))
                break
            except ServerError as e:
                waiting.discard(e.request_id)
                self.tally.error("async", len(batches[e.request_id - first]), e)
            except BertTimeoutError as e:
                for request_id in e.request_ids:
                    waiting.discard(request_id)
                    self.tally.lost("async", len(batches[request_id - first]))
        for request_id in waiting:  # fetch() ended with these still out: nothing came, nothing was raised
            self.tally.lost("async", len(batches[request_id - first]))

    def _encode_async(self, client, batches: list[np.ndarray]) -> None:
        """``encode_async`` over the batches; a server error or a timeout ends it, as it ends a user's loop."""
        from bert_serving.client import BertTimeoutError, ServerError

        first = client.status["num_request"] + 1
        sent_at: dict[int, float] = {}

        def generate():
            for j, batch in enumerate(batches):
                sent_at[first + j] = time.perf_counter()
                yield self._text(batch)

        answered: set[int] = set()
        try:
            for response in client.encode_async(generate()):
                batch = batches[response.id - first]
                answered.add(response.id)
                self.tally.replied("async", len(batch), time.perf_counter() - sent_at[response.id],
                                   self.checker.mismatched_rows(response.embedding, batch))
        except ServerError as e:
            self.tally.error("async", len(batches[e.request_id - first]), e)
            answered.add(e.request_id)
        except BertTimeoutError as e:
            for request_id in e.request_ids:
                self.tally.lost("async", len(batches[request_id - first]))
                answered.add(request_id)
        # Sent but abandoned when the loop ended on an error: the user's code gave up on them, not the server.
        self.tally.abandoned("async", len(set(sent_at) - answered))


class CloneGroup:
    """What the sender of a clone pair has out (its chunks, as pool indices), and the clone that must receive each.

    The clone matches each multicast reply to an outstanding chunk of the same size whose reference rows it equals;
    a reply that matches none is a mismatch. Chunks of a request that failed for the sender (error, timeout) are
    forgiven: the clone may or may not see them.
    """

    def __init__(self, checker: Checker, tally: Tally, *, grace_s: float = 30.0):
        self.checker, self.tally = checker, tally
        self.grace_s = grace_s  # after the sender's last reply, how long its replies may take to reach the clone
        self._outstanding: list[np.ndarray] = []
        self._forgiven: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._done_at: float | None = None

    def expect(self, indices: np.ndarray, max_batch_size: int) -> list[np.ndarray]:
        """The chunks a blocking encode of ``indices`` sends (one request per ``max_batch_size``), registered."""
        chunks = [indices[start:start + max_batch_size] for start in range(0, len(indices), max_batch_size)]
        with self._lock:
            self._outstanding.extend(chunks)
        return chunks

    def forgive(self, chunks: list[np.ndarray]) -> None:
        with self._lock:
            for chunk in chunks:
                for j, waiting in enumerate(self._outstanding):
                    if waiting is chunk:
                        self._forgiven.append(self._outstanding.pop(j))
                        break

    def sender_done(self) -> None:
        self._done_at = time.monotonic()

    def listen(self, clone) -> None:
        from bert_serving.client import BertTimeoutError

        while not self._finished():
            try:
                for vectors in clone.listen():
                    self._match(vectors)
                    if self._finished():
                        break
            except BertTimeoutError:  # nothing for CLONE_POLL_MS: look whether the sender is done
                pass
        with self._lock:
            self.tally.multicast(lost=len(self._outstanding))

    def _finished(self) -> bool:
        if self._done_at is None:
            return False
        with self._lock:
            return not self._outstanding or time.monotonic() > self._done_at + self.grace_s

    def _match(self, vectors: np.ndarray) -> None:
        with self._lock:
            for chunks in (self._outstanding, self._forgiven):
                for j, chunk in enumerate(chunks):
                    if len(chunk) == len(vectors) and self.checker.mismatched_rows(vectors, chunk) == 0:
                        del chunks[j]
                        if chunks is self._outstanding:
                            self.tally.multicast(received=1)
                        return
            self.tally.multicast(mismatched=1)
