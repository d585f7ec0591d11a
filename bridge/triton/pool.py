"""Several tritonservers behind one bridge: which endpoint serves each chunk, and each endpoint's health.

Why the bridge balances by itself: a Kubernetes Service balances per TCP connection, and gRPC keeps one connection
open, so one channel through a Service pins every call to one Triton pod. Instead every ``--triton-url`` target
(``HOST:PORT``; a headless Service's name resolves to one address per ready pod) is resolved here, again every
``refresh_s`` seconds (``--triton-resolve-interval-s``), and each address gets its own channel (a ``TritonBackend``).

- A chunk goes to the healthy endpoint with the fewest chunks in flight (the least recently chosen among equals).
- Every endpoint is asked whether its model is ready, at least every 2 s (a quarter of the endpoint timeout when
  that is shorter). One that answers UNAVAILABLE or "model not ready" is taken out and probed with backoff until its
  model is ready again; a chunk that failed on it is retried once on another endpoint (embeddings are idempotent).
- Silence, per endpoint: a replica cut off by the network answers nothing and closes nothing, so its calls would wait
  out the whole ``--triton-timeout-s``. An endpoint that has said nothing at all -- no reply, no health answer -- for
  ``endpoint_timeout_s`` (``--triton-endpoint-timeout-s``) while it owes a chunk is taken out, and its chunks in
  flight move to another endpoint at once; it is probed on a new channel (a new TCP connection: the old one may stay
  stuck in retransmission long after the network heals). A chunk therefore waits at most that timeout plus the time
  it needed anyway. The calls left behind are never cancelled (see service.py), only no longer awaited: their
  answers, if any come, are dropped, so each chunk is answered once.
- Only when no endpoint is left does the caller get ``BackendUnavailable``. When none is healthy, chunks are still
  tried on the least busy one: a single Triton that comes back is used at once, as with one channel; and a chunk on
  a silent endpoint with nowhere else to go keeps waiting there, up to ``--triton-timeout-s``.
- A timeout of the call itself (``BackendOverloaded``: Triton kept answering health checks but not this call) or a
  rejected request (``BackendError``) is not retried: another replica would answer the same, or only add load.
- When the bridge knows Triton is down (its embedded tritonserver died and is being restarted), ``suspend(reason)``
  makes every chunk fail at once with that reason, and /ready and SHOW_STATUS say so, until ``resume()`` has seen
  the model ready again.

The pool has TritonBackend's surface (``infer``, ``wait_until_ready``, ``check_ready``, ``describe``, ``close``,
``url``, ``model_name``, ``details``), so the service core does not know how many Tritons there are; it only learns,
through ``watch_endpoints_up``, how many are up, which sets how much work it keeps in flight (service.py).
``endpoint_states()`` is what SHOW_STATUS, SHOW_CONFIG and an HTTP /ready report.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np

from ..errors import BackendOverloaded, BackendUnavailable, BridgeError
from .backend import TritonBackend

log = logging.getLogger("bert_bridge.triton")

# How often names are resolved again: a new Triton pod behind a headless Service gets chunks within this time.
REFRESH_S = 10.0
# How long an endpoint that owes an answer may say nothing before its chunks move elsewhere.
ENDPOINT_TIMEOUT_S = 10.0
# Probing an endpoint that is out: first at once, then after 0.25 s, doubling up to 5 s between probes.
PROBE_FIRST_DELAY_S = 0.25
PROBE_MAX_DELAY_S = 5.0
PROBE_TIMEOUT_S = 2.0
# Healthy endpoints are asked at least this often, so SHOW_STATUS tells the truth about one that died while idle and
# a busy one's silence is told from its slowness.
CHECK_EVERY_S = 2.0
RESUME_CHECK_S = 0.1

Resolver = Callable[[str, int], Awaitable[list[str]]]


def split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


async def resolve_addresses(host: str, port: int) -> list[str]:
    """``HOST:PORT`` channel addresses for every address of ``host``. IPv4 is preferred when a name has both
    families: a dual-stack ``localhost`` would otherwise look like two replicas, one of which never answers."""
    try:
        ipaddress.ip_address(host)
        literal = [host]
    except ValueError:
        literal = []
    if literal:
        addresses = literal
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise BackendUnavailable(f"cannot resolve Triton host '{host}': {e}") from e
        ipv4 = sorted({info[4][0] for info in infos if info[0] == socket.AF_INET})
        ipv6 = sorted({info[4][0] for info in infos if info[0] == socket.AF_INET6})
        addresses = ipv4 or ipv6
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


class _MovedOff(Exception):
    """The endpoint a chunk was on went silent or was taken out: the chunk goes elsewhere (never leaves the pool)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Endpoint:
    """One Triton address and what the pool knows about it."""

    address: str  # what the channel connects to: IP:PORT
    target: str  # the --triton-url it was resolved from
    backend: TritonBackend  # its current channel (replaced after a silence)
    state: str = "starting"  # starting (not yet probed), ready, unavailable
    in_flight: int = 0
    served_chunks: int = 0
    chunk_seconds: float = 0.0  # the served chunks' time on it, sent to answered: what it costs to send it one
    failed_chunks: int = 0
    moved_chunks: int = 0  # chunks moved to another endpoint while it was silent or taken out
    last_error: str = ""
    last_chosen: int = 0
    last_heard: float = float("-inf")  # event-loop time of its last answer of any kind
    watch: Optional[asyncio.Task] = None  # asks it, while it is up and while it is out (_watch)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when it is taken out: its watch probes soon
    # Done when ``backend`` is replaced (after a silence): the chunks waiting on the old channel move at once.
    replaced: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def healthy(self) -> bool:
        return self.state == "ready"

    def describe_state(self) -> dict:
        return {"url": self.address, "target": self.target, "state": self.state, "in_flight": self.in_flight,
                "served_chunks": self.served_chunks, "chunk_seconds": round(self.chunk_seconds, 6),
                "failed_chunks": self.failed_chunks,
                "moved_chunks": self.moved_chunks, "last_error": self.last_error}


class TritonPool:
    """Every Triton endpoint the bridge uses, for one model. Create it inside the running event loop."""

    def __init__(self, *, targets: Sequence[str], model_name: str, timeout_s: float,
                 endpoint_timeout_s: float = ENDPOINT_TIMEOUT_S, refresh_s: float = REFRESH_S,
                 resolve: Resolver = resolve_addresses):
        if not targets:
            raise ValueError("a Triton pool needs at least one HOST:PORT target")
        self.targets = tuple(targets)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.endpoint_timeout_s = endpoint_timeout_s
        self.refresh_s = refresh_s
        # A live endpoint is heard from several times within one endpoint timeout.
        self._check_every_s = min(CHECK_EVERY_S, endpoint_timeout_s / 4)
        self._resolve = resolve
        self._endpoints: dict[str, Endpoint] = {}
        self._calls = Counter()  # channel -> its calls not yet answered, moved-off ones included
        self._retired: list[TritonBackend] = []  # channels no endpoint uses: closed once their calls are answered
        self._closing: set[asyncio.Task] = set()
        self._choices = itertools.count(1)
        self._resolved = asyncio.Event()
        self._refresher: Optional[asyncio.Task] = None
        self._closed = False
        self._suspended = ""  # why every chunk fails at once (see suspend)
        self._up_listeners: list[Callable[[int], None]] = []
        self._up_reported: Optional[int] = None

    # -- TritonBackend's surface ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The targets as given (one HOST:PORT for a single Triton)."""
        return ",".join(self.targets)

    @property
    def details(self) -> dict:
        """What the first endpoint that answered told about the model; empty until one did."""
        for endpoint in self._endpoints.values():
            if endpoint.backend.details:
                return endpoint.backend.details
        return {}

    async def wait_until_ready(self, timeout_s: float) -> dict:
        """Wait until one endpoint has the model ready (the others keep being probed); returns its details."""
        self._start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            ready = [e for e in self._endpoints.values() if e.healthy and e.backend.details]
            if ready:
                return ready[0].backend.details
            await asyncio.sleep(0.1)
        raise BackendUnavailable(f"no Triton endpoint had model '{self.model_name}' ready within {timeout_s:.0f}s"
                                 f"{self._reasons()}")

    async def check_ready(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """Ask every endpoint now; return if one has the model ready, else raise BackendUnavailable with reasons.
        ``timeout_s`` bounds the question to an endpoint that is out; one in service gets the endpoint timeout, as its
        watch gives it: a Triton busy with a large batch answers late, and a /ready poll taking it out of service for
        that would move its chunks and fail requests."""
        self._start()
        await self._resolved.wait()
        if self._suspended:
            raise BackendUnavailable(self._suspended)
        endpoints = list(self._endpoints.values())
        outcomes = await asyncio.gather(*(self._ask(e, self.endpoint_timeout_s if e.healthy else timeout_s)
                                          for e in endpoints), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, BridgeError):
                raise outcome
        if not any(e.healthy for e in self._endpoints.values()):
            raise BackendUnavailable(f"no Triton endpoint has model '{self.model_name}' ready{self._reasons()}")

    async def describe(self) -> dict:
        """What a ready endpoint says about the model now; BackendUnavailable when none answers."""
        for endpoint in sorted(self._endpoints.values(), key=lambda e: not e.healthy):
            backend = endpoint.backend
            try:
                return await backend.describe(timeout_s=self.endpoint_timeout_s)
            except BridgeError as e:
                self._take_out(endpoint, backend, e)
        raise BackendUnavailable(f"no Triton endpoint describes model '{self.model_name}'{self._reasons()}")

    async def infer(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray, *,
                    high_priority: bool) -> np.ndarray:
        self._start()
        await self._resolved.wait()  # the first resolution has been tried (it takes a DNS round trip at most)
        if self._suspended:
            raise BackendUnavailable(self._suspended)
        inputs = (input_ids, input_mask, segment_ids)
        failed_on: Optional[Endpoint] = None
        while True:
            endpoint = self._choose(excluding=failed_on)
            if endpoint is None and failed_on is not None:  # the others were resolved away meanwhile
                raise BackendUnavailable(f"{failed_on.last_error}; no other Triton endpoint is left to retry on")
            if endpoint is None:
                raise BackendUnavailable(f"no Triton endpoint is known for {self.url}{self._reasons()}")
            try:
                result = await self._attempt(endpoint, inputs, high_priority)
            except _MovedOff as e:
                endpoint.moved_chunks += 1
                if failed_on is not None:
                    raise BackendUnavailable(f"no Triton endpoint could serve this chunk: {failed_on.address}: "
                                             f"{failed_on.last_error}; {endpoint.address}: {e.reason}") from None
                log.info("moving a chunk off %s: %s", endpoint.address, e.reason)
                failed_on = endpoint
                continue
            except BackendUnavailable as e:
                endpoint.failed_chunks += 1
                if self._suspended:  # it failed because Triton died: say so
                    raise BackendUnavailable(self._suspended) from e
                if failed_on is not None:
                    raise BackendUnavailable(f"no Triton endpoint could serve this chunk: {failed_on.address}: "
                                             f"{failed_on.last_error}; {endpoint.address}: {e.message}") from e
                if len(self._endpoints) < 2:
                    raise
                log.info("retrying a chunk on another endpoint: %s", e.message)
                failed_on = endpoint
                continue
            except BridgeError:
                endpoint.failed_chunks += 1
                raise
            if not endpoint.healthy and not self._suspended:
                self._bring_back(endpoint)
            return result

    async def close(self) -> None:
        self._closed = True
        tasks = [self._refresher] if self._refresher else []
        tasks += [e.watch for e in self._endpoints.values() if e.watch]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for backend in [*(e.backend for e in self._endpoints.values()), *self._retired]:
            await backend.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._endpoints.clear()
        self._retired.clear()

    # -- how many endpoints are up: the service core's in-flight capacity follows it ----------------------------------

    @property
    def endpoints_up(self) -> int:
        """Endpoints with the model ready, as the pool sees them now."""
        return sum(e.healthy for e in self._endpoints.values())

    def watch_endpoints_up(self, listener: Callable[[int], None]) -> None:
        """``listener(endpoints_up)`` now and whenever that number changes."""
        self._up_listeners.append(listener)
        listener(self.endpoints_up)

    def _states_changed(self) -> None:
        up = self.endpoints_up
        if up != self._up_reported:
            self._up_reported = up
            for listener in self._up_listeners:
                listener(up)

    # -- a Triton the bridge knows is down ----------------------------------------------------------------------------

    def suspend(self, reason: str) -> None:
        """Triton is known to be down (``reason`` says why): every chunk fails at once with ``reason``, chunks in
        flight that fail because of it too, and /ready and the endpoint states report it, until ``resume``."""
        self._suspended = reason
        for endpoint in self._endpoints.values():
            endpoint.state, endpoint.last_error = "unavailable", reason
        self._states_changed()

    async def resume(self, targets: Optional[Sequence[str]] = None, timeout_s: float = 10.0) -> None:
        """Triton is back (at ``targets``, if it moved): return once an endpoint confirms the model is ready, then
        chunks flow again. BackendUnavailable, still suspended, if none does within ``timeout_s``."""
        if targets is not None and tuple(targets) != self.targets:
            log.info("Triton moved from %s to %s", self.url, ",".join(targets))
            self.targets = tuple(targets)
            await self._refresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            # The channels reconnect with a short backoff (triton/backend.CHANNEL_ARGS): ask until one answers.
            endpoints = list(self._endpoints.values())
            outcomes = await asyncio.gather(*(self._confirm_ready(e.backend, PROBE_TIMEOUT_S) for e in endpoints),
                                            return_exceptions=True)
            ready = [e for e, outcome in zip(endpoints, outcomes) if outcome is None]
            if ready:
                break
            errors = [o for o in outcomes if isinstance(o, BridgeError)]
            if loop.time() >= deadline:
                reason = f": {errors[0].message}" if errors else ""
                raise BackendUnavailable(f"Triton did not confirm model '{self.model_name}' ready within "
                                         f"{timeout_s:g}s after it was restarted{reason}")
            await asyncio.sleep(RESUME_CHECK_S)
        self._suspended = ""
        for endpoint in ready:
            endpoint.last_heard = loop.time()
            self._bring_back(endpoint)

    # -- what SHOW_STATUS, SHOW_CONFIG and /ready report ------------------------------------------------------------

    def endpoint_states(self) -> list[dict]:
        """One dict per endpoint: url, target, state (starting/ready/unavailable), in_flight, served_chunks,
        chunk_seconds, failed_chunks, moved_chunks, last_error."""
        return [e.describe_state() for e in self._endpoints.values()]

    @property
    def addresses(self) -> list[str]:
        return list(self._endpoints)

    # -- choosing and calling -----------------------------------------------------------------------------------------

    def _choose(self, excluding: Optional[Endpoint]) -> Optional[Endpoint]:
        candidates = [e for e in self._endpoints.values() if e is not excluding]
        healthy = [e for e in candidates if e.healthy]
        if not (healthy or candidates):
            return None
        chosen = min(healthy or candidates, key=lambda e: (e.in_flight, e.last_chosen))
        chosen.last_chosen = next(self._choices)
        return chosen

    async def _attempt(self, endpoint: Endpoint, inputs: tuple, high_priority: bool) -> np.ndarray:
        """The chunk's answer from ``endpoint``; _MovedOff when the endpoint falls silent (or is taken out) while it
        has the chunk and another endpoint is healthy. With none, the chunk keeps waiting for this one's answer."""
        loop = asyncio.get_running_loop()
        backend, replaced = endpoint.backend, endpoint.replaced
        call = asyncio.ensure_future(backend.infer(*inputs, high_priority=high_priority))
        self._calls[backend] += 1
        call.add_done_callback(lambda done: self._call_answered(backend, done))
        sent_at = loop.time()
        endpoint.in_flight += 1
        try:
            while not call.done():
                silent_s = loop.time() - max(sent_at, endpoint.last_heard)
                silent = silent_s >= self.endpoint_timeout_s
                if silent:
                    self._take_out(endpoint, backend, BackendOverloaded(
                        f"Triton at {endpoint.address} answered nothing for {self.endpoint_timeout_s:g}s "
                        "(--triton-endpoint-timeout-s): unreachable, or its connection is stuck"))
                if (silent or endpoint.backend is not backend) and self._others_healthy(endpoint):
                    raise _MovedOff(endpoint.last_error or "taken out")
                # Wake at the answer, the silence deadline or the channel's replacement, and at least every check
                # interval to see whether the chunk can move.
                wait_s = self._check_every_s if silent else min(self.endpoint_timeout_s - silent_s,
                                                                self._check_every_s)
                await asyncio.wait({call} if replaced.done() else {call, replaced}, timeout=wait_s,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            endpoint.in_flight -= 1
        if call.exception() is None:
            endpoint.served_chunks += 1
            endpoint.chunk_seconds += loop.time() - sent_at
        elif isinstance(call.exception(), BackendUnavailable) and not self._suspended:
            self._take_out(endpoint, backend, call.exception())
        return call.result()  # or the BridgeError Triton answered with

    def _call_answered(self, backend: TritonBackend, call: asyncio.Future) -> None:
        self._calls[backend] -= 1
        if not self._calls[backend]:
            del self._calls[backend]
        answered = not call.cancelled() and not isinstance(call.exception(), (BackendUnavailable, BackendOverloaded))
        if answered:  # an answer, even a rejection, is a sign of life
            for endpoint in self._endpoints.values():
                if endpoint.backend is backend:
                    endpoint.last_heard = asyncio.get_running_loop().time()
        self._close_retired()

    def _others_healthy(self, endpoint: Endpoint) -> bool:
        return any(e.healthy for e in self._endpoints.values() if e is not endpoint)

    # -- health -------------------------------------------------------------------------------------------------------

    def _take_out(self, endpoint: Endpoint, backend: TritonBackend, error: BridgeError) -> None:
        """``endpoint`` failed ``error`` on channel ``backend``. Silence (``BackendOverloaded`` from a call or check
        that got no answer) also replaces the channel: chunks on it move elsewhere and probes go over a new one."""
        if endpoint.backend is not backend or self._endpoints.get(endpoint.address) is not endpoint:
            return  # already dealt with (the channel was replaced, or the endpoint resolved away)
        endpoint.last_error = error.message
        if endpoint.state != "unavailable":
            log.warning("Triton at %s taken out: %s", endpoint.address, error.message)
        endpoint.state = "unavailable"
        if isinstance(error, BackendOverloaded):
            endpoint.backend = TritonBackend(url=endpoint.address, model_name=self.model_name,
                                             timeout_s=self.timeout_s)
            endpoint.backend.details = backend.details
            endpoint.replaced.set_result(None)
            endpoint.replaced = asyncio.get_running_loop().create_future()
            self._retire(backend)
        endpoint.wake.set()  # its watch starts probing
        self._states_changed()

    def _bring_back(self, endpoint: Endpoint) -> None:
        if endpoint.state == "unavailable":
            log.info("Triton at %s is back", endpoint.address)
        endpoint.state = "ready"
        self._states_changed()

    async def _confirm_ready(self, backend: TritonBackend, timeout_s: float) -> None:
        await backend.check_ready(timeout_s)
        if not backend.details:
            await backend.describe(timeout_s=timeout_s)

    async def _ask(self, endpoint: Endpoint, timeout_s: float) -> None:
        """Ask ``endpoint`` whether its model is ready; take it out or bring it back by the answer."""
        backend = endpoint.backend
        try:
            await self._confirm_ready(backend, timeout_s)
        except BridgeError as e:
            if not self._suspended:
                self._take_out(endpoint, backend, e)
            raise
        if endpoint.backend is backend:
            endpoint.last_heard = asyncio.get_running_loop().time()
            if not endpoint.healthy and not self._suspended:
                self._bring_back(endpoint)

    async def _watch(self, endpoint: Endpoint) -> None:
        """For as long as the endpoint is in the pool: ask it every check interval while it is up; once it is out,
        after 0.25 s, then doubling up to every 5 s. Nothing is asked while the pool is suspended: resume() asks."""
        delay_s = 0.0  # a new endpoint is asked at once
        while not self._closed and self._endpoints.get(endpoint.address) is endpoint:
            if await self._pause(endpoint, delay_s) or self._suspended:  # taken out meanwhile: probe soon
                delay_s = self._check_every_s if self._suspended else PROBE_FIRST_DELAY_S
                continue
            was_healthy = endpoint.healthy
            try:
                await self._ask(endpoint, self.endpoint_timeout_s if was_healthy else PROBE_TIMEOUT_S)
            except BridgeError:
                endpoint.wake.clear()  # its own take-out
                delay_s = PROBE_FIRST_DELAY_S if was_healthy else min(max(2 * delay_s, PROBE_FIRST_DELAY_S),
                                                                      PROBE_MAX_DELAY_S)
                continue
            delay_s = self._check_every_s

    @staticmethod
    async def _pause(endpoint: Endpoint, delay_s: float) -> bool:
        """Sleep ``delay_s``; True, early, when the endpoint was taken out meanwhile."""
        try:
            await asyncio.wait_for(endpoint.wake.wait(), delay_s)
        except asyncio.TimeoutError:
            return False
        endpoint.wake.clear()
        return True

    def _reasons(self) -> str:
        errors = [f"{e.address}: {e.last_error}" for e in self._endpoints.values() if e.last_error]
        return "; " + "; ".join(errors) if errors else ""

    # -- resolving ----------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._refresher is None and not self._closed:
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while not self._closed:
            await self._refresh()
            await asyncio.sleep(self.refresh_s)

    async def _refresh(self) -> None:
        """Resolve every target; add endpoints for new addresses, retire those a name no longer resolves to (or
        whose target is gone). A name that does not resolve now keeps its endpoints (DNS hiccups must not empty the
        pool)."""
        for endpoint in [e for e in self._endpoints.values() if e.target not in self.targets]:
            self._remove(endpoint, f"{endpoint.target} is no longer a target")
        for target in self.targets:
            host, port = split_target(target)
            try:
                addresses = await self._resolve(host, port)
            except BackendUnavailable as e:
                log.warning("%s; keeping its %d known endpoint(s)", e.message,
                            sum(e.target == target for e in self._endpoints.values()))
                continue
            for address in addresses:
                if address not in self._endpoints and not self._closed:
                    backend = TritonBackend(url=address, model_name=self.model_name, timeout_s=self.timeout_s)
                    endpoint = self._endpoints[address] = Endpoint(address=address, target=target, backend=backend)
                    if len(self._endpoints) > 1 or self._resolved.is_set():
                        log.info("Triton endpoint %s added (from %s)", address, target)
                    endpoint.watch = asyncio.create_task(self._watch(endpoint))
            for endpoint in [e for e in self._endpoints.values() if e.target == target]:
                if endpoint.address not in addresses:
                    self._remove(endpoint, f"{target} no longer resolves to it")
        self._resolved.set()
        self._states_changed()

    def _remove(self, endpoint: Endpoint, why: str) -> None:
        """The endpoint gets no new chunks; those it has finish there (it is alive, only no longer listed)."""
        log.info("Triton endpoint %s removed: %s", endpoint.address, why)
        del self._endpoints[endpoint.address]
        if endpoint.watch is not None:
            endpoint.watch.cancel()
        self._retire(endpoint.backend)
        self._states_changed()

    def _retire(self, backend: TritonBackend) -> None:
        self._retired.append(backend)
        self._close_retired()

    def _close_retired(self) -> None:
        if self._closed:  # close() closes every channel itself
            return
        for backend in [b for b in self._retired if not self._calls[b]]:
            self._retired.remove(backend)
            closing = asyncio.ensure_future(backend.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
