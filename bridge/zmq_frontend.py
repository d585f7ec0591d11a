"""bert-as-service's ZeroMQ protocol over the service core: PULL for requests, XPUB for replies.

The 1.10 client sends its first request the moment it connects, while its SUB subscription travels on another TCP
connection: a reply published before that subscription arrives is lost (the slow joiner). So replies are held until
the identity has subscribed -- and a client instance's first request (RID 1) until as many SUBSCRIBEs were seen for
the identity as new instances were, which covers clones sharing an identity (shared/reference/zmq-wire-protocol.md §8).
Exactly one reply goes out per request, shutdown included: requests in flight get their vectors or an error reply
before the sockets close; the send high-water mark is unlimited so a slow reader loses nothing. The one exception is
a client that has gone: when the last subscriber of an identity leaves, its requests in flight are cancelled (their
chunks not yet sent to Triton are dropped) and their replies, which nobody could receive, are not sent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

import zmq
import zmq.asyncio

from bert_serving.client.protocol import (SHOW_STATUS, TERMINATION, ProtocolError, Request,
                                          decode_request, encode_error_reply, encode_json_reply, encode_ndarray_reply)

from .errors import ClientGone, ShuttingDown, StartupError
from .metrics import BridgeMetrics
from .service import EncodingService, error_message
from .statistics import ServerStatistic

log = logging.getLogger("bert_bridge.zmq")

HOLD_TIMEOUT_S = 5.0
FLUSH_INTERVAL_S = 0.05
CLOSE_LINGER_MS = 2000  # replies already queued still reach their clients after close


@dataclass
class _HeldReply:
    frames: list
    request_id: bytes
    subscribers_needed: int
    deadline: float = field(default_factory=lambda: time.monotonic() + HOLD_TIMEOUT_S)


class ReplyPublisher:
    """Owns the XPUB socket: tracks subscriptions and sends each held reply once its identity can receive it."""

    def __init__(self, socket: zmq.asyncio.Socket,
                 on_identity_gone: Optional[Callable[[bytes, int], None]] = None):
        self.socket = socket
        # Called with (identity, SUBSCRIBEs it had) when the last subscriber of an identity leaves.
        self.on_identity_gone = on_identity_gone
        self._subscriptions: dict[bytes, int] = defaultdict(int)  # SUBSCRIBEs seen per identity
        self._new_instances: dict[bytes, int] = defaultdict(int)  # RID-1 requests seen per identity
        self._held: dict[bytes, deque] = defaultdict(deque)
        self._wakeup = asyncio.Event()
        self._emptied = asyncio.Event()

    def note_request(self, request: Request) -> int:
        """Record an incoming request; returns how many subscribers its reply must wait for."""
        if request.request_id == b"1":
            self._new_instances[request.identity] += 1
            return self._new_instances[request.identity]
        return 1

    def publish(self, identity: bytes, frames: list, request_id: bytes, subscribers_needed: int) -> None:
        self._held[identity].append(_HeldReply(frames, request_id, subscribers_needed))
        self._emptied.clear()
        self._wakeup.set()

    async def read_subscriptions(self) -> None:
        while True:
            event = await self.socket.recv()
            if not event:
                continue
            identity = bytes(event[1:])
            if event[0] == 1:
                self._subscriptions[identity] += 1
            elif event[0] == 0:  # the last subscriber of this identity left
                subscribed = self._subscriptions.pop(identity, 0)
                self._new_instances.pop(identity, None)
                if self.on_identity_gone is not None:
                    self.on_identity_gone(identity, subscribed)
            self._wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), FLUSH_INTERVAL_S if self._held else None)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            await self._flush()

    async def wait_until_sent(self) -> None:
        """Returns once no reply is held (each one was sent, or dropped after HOLD_TIMEOUT_S without subscriber)."""
        if self._held:
            await self._emptied.wait()

    async def _flush(self) -> None:
        now = time.monotonic()
        for identity in list(self._held):
            queue = self._held[identity]
            while queue:
                reply = queue[0]
                subscribed = self._subscriptions.get(identity, 0)
                if subscribed < reply.subscribers_needed and now < reply.deadline:
                    break  # keep this identity's replies in order
                queue.popleft()
                if subscribed == 0:
                    log.warning("dropping the reply to request %s of %r: nobody subscribed within %.0fs",
                                reply.request_id.decode(), identity, HOLD_TIMEOUT_S)
                    continue
                await self.socket.send_multipart(reply.frames, copy=False)
            if not queue:
                del self._held[identity]
        if not self._held:
            self._emptied.set()


@dataclass
class ZmqSockets:
    """The two bound sockets. Bound first thing at start, so a port in use is refused before any slow work."""

    context: zmq.asyncio.Context
    receiver: zmq.asyncio.Socket
    sender: zmq.asyncio.Socket

    @classmethod
    def bind(cls, *, ip: str, port: int, port_out: int) -> "ZmqSockets":
        context = zmq.asyncio.Context()
        receiver = context.socket(zmq.PULL)
        sender = context.socket(zmq.XPUB)
        for socket in (receiver, sender):
            socket.setsockopt(zmq.LINGER, 0)
        sender.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every SUBSCRIBE, also of clones sharing an identity
        sender.setsockopt(zmq.SNDHWM, 0)  # never drop replies a client has not read yet
        sender.setsockopt(zmq.XPUB_NODROP, 1)
        sockets = cls(context, receiver, sender)
        for socket, which, number in ((receiver, "-port", port), (sender, "-port_out", port_out)):
            try:
                socket.bind(f"tcp://{ip}:{number}")
            except zmq.ZMQError as e:
                sockets.close()
                raise StartupError(f"cannot listen on {which} {number} at {ip}: {e.strerror}") from e
        return sockets

    def close(self) -> None:
        self.receiver.close(0)
        self.sender.close(CLOSE_LINGER_MS)
        self.context.term()


class ZmqFrontend:
    def __init__(self, *, sockets: ZmqSockets, service: EncodingService, statistic: ServerStatistic,
                 metrics: BridgeMetrics, config_reply: Callable[[Request], dict], on_terminate: Callable[[], None]):
        self.sockets = sockets
        self.service = service
        self.statistic = statistic
        self.metrics = metrics
        self.config_reply = config_reply
        self.on_terminate = on_terminate
        self.receiver = sockets.receiver
        self.publisher = ReplyPublisher(sockets.sender, on_identity_gone=self._cancel_abandoned)
        self._tasks: set[asyncio.Task] = set()
        # identity -> {encode task in flight: SUBSCRIBEs its reply waits for}; tasks cancelled because their client left
        self._encoding: dict[bytes, dict[asyncio.Task, int]] = defaultdict(dict)
        self._abandoned: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._stopping = False
        self._cut_short = asyncio.Event()

    async def serve(self) -> None:
        """Receives and serves requests until cancelled; then ``shutdown`` answers everything still in flight."""
        self._background = [asyncio.create_task(self.publisher.read_subscriptions()),
                            asyncio.create_task(self.publisher.run())]
        await self._receive()

    async def shutdown(self, timeout_s: float) -> None:
        """Stop serving: requests arriving from now on get an error reply, requests in flight get up to
        ``timeout_s`` to finish (then an error reply), and every reply is sent before this returns."""
        self._stopping = True
        refuse = asyncio.create_task(self._receive())  # from now on answered with ShuttingDown
        if self._tasks:
            log.info("shutting down: up to %.0fs for %d request(s) in flight", timeout_s, len(self._tasks))
            finished = asyncio.create_task(asyncio.wait(list(self._tasks)))
            cut_short = asyncio.create_task(self._cut_short.wait())
            await asyncio.wait([finished, cut_short], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            cut_short.cancel()
        unfinished = [task for task in self._tasks if not task.done()]
        for task in unfinished:
            task.cancel()  # its handler answers with an error
        await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            await asyncio.wait_for(self.publisher.wait_until_sent(), HOLD_TIMEOUT_S + 1)
        finally:
            refuse.cancel()
            for task in self._background:
                task.cancel()
            await asyncio.gather(refuse, *self._background, return_exceptions=True)

    def cut_drain_short(self) -> None:
        """A second signal during shutdown: answer what is still in flight with an error now."""
        self._cut_short.set()

    async def _receive(self) -> None:
        while True:
            frames = await self.receiver.recv_multipart()
            self._spawn(self._handle(frames))

    def _spawn(self, coroutine: Awaitable) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, frames: list) -> None:
        try:
            request = decode_request(frames)
        except ProtocolError as e:
            # No valid RID to answer to: the original dropped these too, but we say so.
            log.warning("ignoring a malformed request (%s): %r", e, [bytes(f[:40]) for f in frames[:4]])
            return
        if request.message == TERMINATION:
            log.info("received TERMINATION: shutting down")
            self.on_terminate()
            return
        needed = self.publisher.note_request(request)
        if request.is_command:
            self.statistic.record_command(request.identity)
            reply = self.config_reply(request)
            if request.message == SHOW_STATUS:
                reply = {**reply, "statistic": self.statistic.value()}
            frames = encode_json_reply(request.identity, reply, request.request_id)
        else:
            self.statistic.record_data(request.identity, request.length)
            frames = await self._encode(request, needed)
        self.publisher.publish(request.identity, frames, request.request_id, needed)

    def _cancel_abandoned(self, identity: bytes, subscribed: int) -> None:
        """The last subscriber of ``identity`` left: stop the requests whose own subscriber had come and gone. A
        request whose subscriber has not arrived yet (a slow joiner, or a new clone sharing the identity) is kept."""
        for task, needed in list(self._encoding.get(identity, {}).items()):
            if needed <= subscribed and not task.done():
                self._abandoned.add(task)
                task.cancel()

    async def _encode(self, request: Request, subscribers_needed: int = 1) -> list:
        task = asyncio.current_task()
        self._encoding[request.identity][task] = subscribers_needed
        with self.metrics.track("zmq", request.length) as tracker:
            try:
                if self._stopping:
                    raise ShuttingDown("the server is shutting down and accepts no new requests")
                result = await self.service.encode(request.texts(), client=request.identity)
            except ProtocolError as e:
                tracker.failed("InvalidRequest")
                return encode_error_reply(request.identity, str(e), "InvalidRequest", request.request_id)
            except asyncio.CancelledError:
                if task in self._abandoned:  # nobody can receive the reply: send none
                    log.info("client %r left: request %s (%d sentences) stopped unfinished, no reply sent",
                             request.identity, request.request_id.decode(), request.length)
                    tracker.failed(ClientGone.kind)
                    raise
                # shutdown's drain timeout ran out: answer, then stop
                error = ShuttingDown("the server shut down before this request was finished")
                tracker.failed(error.kind)
                return encode_error_reply(request.identity, error.message, error.kind, request.request_id)
            except Exception as e:  # every failure becomes a reply: a client must never hang
                kind, message = error_message(e)
                tracker.failed(kind)
                log.warning("request %s of %r failed: %s: %s", request.request_id.decode(), request.identity, kind,
                            message)
                return encode_error_reply(request.identity, message, kind, request.request_id)
            finally:
                self._forget_encoding(request.identity, task)
            tracker.succeeded(result)
        return encode_ndarray_reply(request.identity, result.embeddings, request.request_id, result.tokens)

    def _forget_encoding(self, identity: bytes, task: asyncio.Task) -> None:
        self._abandoned.discard(task)
        in_flight = self._encoding.get(identity)
        if in_flight is not None:
            in_flight.pop(task, None)
            if not in_flight:
                del self._encoding[identity]
