"""Several tritonservers behind one bridge: which endpoint serves each chunk, and each endpoint's health.

Why the bridge balances by itself: a Kubernetes Service balances per TCP connection, and gRPC keeps one connection
open, so one channel through a Service pins every call to one Triton pod. Instead every ``--triton-url`` target
(``HOST:PORT``; a headless Service's name resolves to one address per ready pod) is resolved here, again every
``refresh_s`` seconds, and each address gets its own channel (a ``TritonBackend``).

- A chunk goes to the healthy endpoint with the fewest chunks in flight (the least recently chosen among equals).
- An endpoint that answers UNAVAILABLE (or "model not ready") is taken out and probed with backoff until its model is
  ready again; the chunk that failed on it is retried once on another endpoint (embeddings are idempotent). Healthy
  endpoints are asked too, every 2 s, so one that died while idle is out before a chunk fails on it.
- Only when no endpoint is left does the caller get ``BackendUnavailable``. When none is healthy, chunks are still
  tried on the least busy one: a single Triton that comes back is used at once, as with one channel.
- A timeout (``BackendOverloaded``) or a rejected request (``BackendError``) is not retried: another replica would
  answer the same, or only add load.
- When the bridge knows Triton is down (its embedded tritonserver died and is being restarted), ``suspend(reason)``
  makes every chunk fail at once with that reason, and /ready and SHOW_STATUS say so, until ``resume()`` has seen
  the model ready again.

The pool has TritonBackend's surface (``infer``, ``wait_until_ready``, ``check_ready``, ``describe``, ``close``,
``url``, ``model_name``, ``details``), so the service core does not know how many Tritons there are;
``endpoint_states()`` is what SHOW_STATUS, SHOW_CONFIG and an HTTP /ready report.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np

from ..errors import BackendUnavailable, BridgeError
from .backend import TritonBackend

log = logging.getLogger("bert_bridge.triton")

# How often names are resolved again: a new Triton pod behind a headless Service gets chunks within this time.
REFRESH_S = 10.0
# Probing an endpoint that failed: first at once, then after 0.25 s, doubling up to 5 s between probes.
PROBE_FIRST_DELAY_S = 0.25
PROBE_MAX_DELAY_S = 5.0
PROBE_TIMEOUT_S = 2.0
IDLE_CHECK_TIMEOUT_S = 5.0
# Healthy endpoints are asked this often too, so SHOW_STATUS tells the truth about one that died while idle.
IDLE_CHECK_S = 2.0
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


@dataclass(eq=False)
class Endpoint:
    """One Triton address and what the pool knows about it."""

    address: str  # what the channel connects to: IP:PORT
    target: str  # the --triton-url it was resolved from
    backend: TritonBackend
    state: str = "starting"  # starting (not yet probed), ready, unavailable
    in_flight: int = 0
    served_chunks: int = 0
    failed_chunks: int = 0
    last_error: str = ""
    last_chosen: int = 0
    probe: Optional[asyncio.Task] = None

    @property
    def healthy(self) -> bool:
        return self.state == "ready"

    def describe_state(self) -> dict:
        return {"url": self.address, "target": self.target, "state": self.state, "in_flight": self.in_flight,
                "served_chunks": self.served_chunks, "failed_chunks": self.failed_chunks,
                "last_error": self.last_error}


class TritonPool:
    """Every Triton endpoint the bridge uses, for one model. Create it inside the running event loop."""

    def __init__(self, *, targets: Sequence[str], model_name: str, timeout_s: float, refresh_s: float = REFRESH_S,
                 resolve: Resolver = resolve_addresses):
        if not targets:
            raise ValueError("a Triton pool needs at least one HOST:PORT target")
        self.targets = tuple(targets)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self._resolve = resolve
        self._endpoints: dict[str, Endpoint] = {}
        self._retired: list[Endpoint] = []  # resolved away while chunks were in flight: closed when they finish
        self._choices = itertools.count(1)
        self._resolved = asyncio.Event()
        self._refresher: Optional[asyncio.Task] = None
        self._closed = False
        self._suspended = ""  # why every chunk fails at once (see suspend)

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
        """Ask every endpoint now; return if one has the model ready, else raise BackendUnavailable with reasons."""
        self._start()
        await self._resolved.wait()
        if self._suspended:
            raise BackendUnavailable(self._suspended)
        endpoints = list(self._endpoints.values())
        outcomes = await asyncio.gather(*(e.backend.check_ready(timeout_s) for e in endpoints),
                                        return_exceptions=True)
        for endpoint, outcome in zip(endpoints, outcomes):
            if isinstance(outcome, BridgeError):
                self._take_out(endpoint, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            elif not endpoint.healthy and endpoint.backend.details:
                self._bring_back(endpoint)
        if not any(e.healthy for e in self._endpoints.values()):
            raise BackendUnavailable(f"no Triton endpoint has model '{self.model_name}' ready{self._reasons()}")

    async def describe(self) -> dict:
        """What a ready endpoint says about the model now; BackendUnavailable when none answers."""
        for endpoint in sorted(self._endpoints.values(), key=lambda e: not e.healthy):
            try:
                return await endpoint.backend.describe()
            except BackendUnavailable as e:
                self._take_out(endpoint, e)
        raise BackendUnavailable(f"no Triton endpoint describes model '{self.model_name}'{self._reasons()}")

    async def infer(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray, *,
                    high_priority: bool) -> np.ndarray:
        self._start()
        await self._resolved.wait()  # the first resolution has been tried (it takes a DNS round trip at most)
        if self._suspended:
            raise BackendUnavailable(self._suspended)
        failed_on: Optional[Endpoint] = None
        while True:
            endpoint = self._choose(excluding=failed_on)
            if endpoint is None and failed_on is not None:  # the others were resolved away meanwhile
                raise BackendUnavailable(f"{failed_on.last_error}; no other Triton endpoint is left to retry on")
            if endpoint is None:
                raise BackendUnavailable(f"no Triton endpoint is known for {self.url}{self._reasons()}")
            endpoint.in_flight += 1
            try:
                result = await endpoint.backend.infer(input_ids, input_mask, segment_ids, high_priority=high_priority)
            except BackendUnavailable as e:
                endpoint.failed_chunks += 1
                if self._suspended:  # it failed because Triton died: say so
                    raise BackendUnavailable(self._suspended) from e
                self._take_out(endpoint, e)
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
            finally:
                endpoint.in_flight -= 1
                self._close_retired()
            endpoint.served_chunks += 1
            if not endpoint.healthy:
                self._bring_back(endpoint)
            return result

    async def close(self) -> None:
        self._closed = True
        tasks = [self._refresher] if self._refresher else []
        tasks += [e.probe for e in self._endpoints.values() if e.probe]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in [*self._endpoints.values(), *self._retired]:
            await endpoint.backend.close()
        self._endpoints.clear()
        self._retired.clear()

    # -- a Triton the bridge knows is down ----------------------------------------------------------------------------

    def suspend(self, reason: str) -> None:
        """Triton is known to be down (``reason`` says why): every chunk fails at once with ``reason``, chunks in
        flight that fail because of it too, and /ready and the endpoint states report it, until ``resume``."""
        self._suspended = reason
        for endpoint in self._endpoints.values():
            endpoint.state, endpoint.last_error = "unavailable", reason
            if endpoint.probe is not None:  # nothing to probe: resume() says when it is back
                endpoint.probe.cancel()
                endpoint.probe = None

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
            # The channels reconnect with a short backoff (triton_backend.CHANNEL_ARGS): ask until one answers.
            endpoints = list(self._endpoints.values())
            outcomes = await asyncio.gather(*(self._confirm_ready(e) for e in endpoints), return_exceptions=True)
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
        for endpoint in self._endpoints.values():
            if endpoint in ready:
                self._bring_back(endpoint)
            else:
                self._ensure_probe(endpoint, first_delay_s=0)

    async def _confirm_ready(self, endpoint: Endpoint) -> None:
        await endpoint.backend.check_ready(PROBE_TIMEOUT_S)
        if not endpoint.backend.details:
            await endpoint.backend.describe()

    # -- what SHOW_STATUS, SHOW_CONFIG and /ready report ------------------------------------------------------------

    def endpoint_states(self) -> list[dict]:
        """One dict per endpoint: url, target, state (starting/ready/unavailable), in_flight, served_chunks,
        failed_chunks, last_error."""
        return [e.describe_state() for e in self._endpoints.values()]

    @property
    def addresses(self) -> list[str]:
        return list(self._endpoints)

    # -- choosing -----------------------------------------------------------------------------------------------------

    def _choose(self, excluding: Optional[Endpoint]) -> Optional[Endpoint]:
        candidates = [e for e in self._endpoints.values() if e is not excluding]
        healthy = [e for e in candidates if e.healthy]
        if not (healthy or candidates):
            return None
        chosen = min(healthy or candidates, key=lambda e: (e.in_flight, e.last_chosen))
        chosen.last_chosen = next(self._choices)
        return chosen

    # -- health -------------------------------------------------------------------------------------------------------

    def _take_out(self, endpoint: Endpoint, error: BridgeError) -> None:
        endpoint.last_error = error.message
        if endpoint.state != "unavailable":
            log.warning("Triton at %s taken out: %s", endpoint.address, error.message)
        endpoint.state = "unavailable"
        if not self._suspended:
            self._ensure_probe(endpoint, first_delay_s=PROBE_FIRST_DELAY_S)

    def _bring_back(self, endpoint: Endpoint) -> None:
        if endpoint.state == "unavailable":
            log.info("Triton at %s is back", endpoint.address)
        endpoint.state = "ready"
        if endpoint.probe is not None and endpoint.probe is not asyncio.current_task():
            endpoint.probe.cancel()
        endpoint.probe = None

    def _ensure_probe(self, endpoint: Endpoint, first_delay_s: float) -> None:
        if self._closed or (endpoint.probe is not None and not endpoint.probe.done()):
            return
        endpoint.probe = asyncio.create_task(self._probe(endpoint, first_delay_s))

    async def _probe(self, endpoint: Endpoint, delay_s: float) -> None:
        """Until the model is ready there again: ask, then wait longer each time."""
        while not self._closed and self._endpoints.get(endpoint.address) is endpoint and not endpoint.healthy:
            await asyncio.sleep(delay_s)
            try:
                await self._confirm_ready(endpoint)
            except BridgeError as e:
                endpoint.last_error = e.message
                if endpoint.state == "starting":
                    endpoint.state = "unavailable"
                delay_s = min(max(2 * delay_s, PROBE_FIRST_DELAY_S), PROBE_MAX_DELAY_S)
                continue
            self._bring_back(endpoint)
            return

    def _reasons(self) -> str:
        errors = [f"{e.address}: {e.last_error}" for e in self._endpoints.values() if e.last_error]
        return "; " + "; ".join(errors) if errors else ""

    # -- resolving ----------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._refresher is None and not self._closed:
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._refresh()
            resolve_at = loop.time() + self.refresh_s
            while True:
                await asyncio.sleep(max(0.0, min(IDLE_CHECK_S, resolve_at - loop.time())))
                if not self._suspended:
                    await self._check_healthy()
                if loop.time() >= resolve_at:
                    break

    async def _check_healthy(self) -> None:
        """An endpoint that died while idle is taken out now, not when the next chunk fails on it (and SHOW_STATUS
        tells the truth about it). Generous timeout: a busy Triton answers health calls late, not never."""
        healthy = [e for e in self._endpoints.values() if e.healthy]
        outcomes = await asyncio.gather(*(e.backend.check_ready(IDLE_CHECK_TIMEOUT_S) for e in healthy),
                                        return_exceptions=True)
        for endpoint, outcome in zip(healthy, outcomes):
            if isinstance(outcome, BridgeError):
                self._take_out(endpoint, outcome)

    async def _refresh(self) -> None:
        """Resolve every target; add endpoints for new addresses, retire those a name no longer resolves to (or
        whose target is gone). A name that does not resolve now keeps its endpoints (DNS hiccups must not empty the
        pool)."""
        for endpoint in [e for e in self._endpoints.values() if e.target not in self.targets]:
            self._retire(endpoint, f"{endpoint.target} is no longer a target")
        for target in self.targets:
            host, port = split_target(target)
            try:
                addresses = await self._resolve(host, port)
            except BackendUnavailable as e:
                log.warning("%s; keeping its %d known endpoint(s)", e.message,
                            sum(e.target == target for e in self._endpoints.values()))
                continue
            for address in addresses:
                if address not in self._endpoints:
                    backend = TritonBackend(url=address, model_name=self.model_name, timeout_s=self.timeout_s)
                    endpoint = self._endpoints[address] = Endpoint(address=address, target=target, backend=backend)
                    if len(self._endpoints) > 1 or self._resolved.is_set():
                        log.info("Triton endpoint %s added (from %s)", address, target)
                    self._ensure_probe(endpoint, first_delay_s=0)
            for endpoint in [e for e in self._endpoints.values() if e.target == target]:
                if endpoint.address not in addresses:
                    self._retire(endpoint, f"{target} no longer resolves to it")
        self._resolved.set()
        self._close_retired()

    def _retire(self, endpoint: Endpoint, why: str) -> None:
        log.info("Triton endpoint %s removed: %s", endpoint.address, why)
        del self._endpoints[endpoint.address]
        if endpoint.probe is not None:
            endpoint.probe.cancel()
        self._retired.append(endpoint)

    def _close_retired(self) -> None:
        for endpoint in [e for e in self._retired if e.in_flight == 0]:
            self._retired.remove(endpoint)
            asyncio.ensure_future(endpoint.backend.close())
