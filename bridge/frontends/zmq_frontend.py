"""bert-as-service's ZeroMQ protocol over the service core: PULL for requests, XPUB for replies.

The 1.10 protocol has no model field: ZeroMQ serves the default model (the first), with the original's defaults
unless that model was exported otherwise; SHOW_CONFIG names it and lists the others.

The 1.10 client sends its first request the moment it connects, while its SUB subscription travels on another TCP
connection: a reply published before that subscription arrives is lost (the slow joiner). So replies are held until
the identity has subscribed -- and a client instance's first request (RID 1) until as many SUBSCRIBEs were seen for
the identity as new instances were, which covers clones sharing an identity (shared/reference/zmq-wire-protocol.md §8).
Exactly one reply goes out per request, shutdown included: requests in flight get their vectors or an error reply
before the sockets close; the send high-water mark is unlimited so a slow reader loses nothing. The one exception is
a client that has gone: when the last subscriber of an identity leaves, its requests in flight are cancelled (their
chunks not yet sent to Triton are dropped) and their replies, which nobody could receive, are not sent.

Malformed messages (wrong frame count, non-numeric RID or LEN, a payload that is not a JSON array, a LEN that disagrees
with it, more bytes than --zmq-max-request-bytes) are logged, rate-limited (bridge/log_limits.py), and answered with
an error reply wherever frame 0 and frame 2 give an identity and RID to answer to. A frame far over the byte limit is
never buffered: libzmq disconnects its sender (MAXMSGSIZE), as its RID, which follows, cannot be read.

Memory stays bounded with slow readers too: every reply counts against --max-inflight-bytes (bridge/core/admission.py)
from the moment it is ready until libzmq has let go of its bytes (a tracked zero-copy frame: written to the client's
connection, or its subscriber left), so unread replies make new requests wait for a ServerBusy error, not the heap
grow. Vectors always go out (they were admitted); an error reply is dropped (and logged) only while its identity
already has ERROR_REPLIES_MAX_UNSENT_PER_IDENTITY error replies unsent, or all identities together
ERROR_REPLIES_MAX_UNSENT: a client that reads nothing cannot grow memory by sending more bad requests.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Optional

import zmq
import zmq.asyncio

from bert_serving.client.connection import set_tcp_keepalive
from bert_serving.client.protocol import (SHOW_STATUS, TERMINATION, ProtocolError, Request, decode_request,
                                          encode_error_reply, encode_json_reply, encode_ndarray_reply,
                                          request_address)

from ..core.admission import Admission
from ..errors import BridgeError, ClientGone, InvalidRequest, RequestTooLarge, ShuttingDown, StartupError, Unauthorized
from ..log_limits import RateLimitedLog
from ..metrics import BridgeMetrics
from .security import CurveServerKeys, Sender, ZapHandler
from ..core.service import EncodingService, error_message
from ..statistics import ServerStatistic

log = logging.getLogger("bert_bridge.zmq")

HOLD_TIMEOUT_S = 5.0
FLUSH_INTERVAL_S = 0.05
CLOSE_LINGER_MS = 2000  # replies already queued still reach their clients after close
# A frame larger than --zmq-max-request-bytes by more than this is refused by libzmq, which disconnects the sender;
# up to it, the request is read and answered with a RequestTooLarge error.
FRAME_SIZE_MARGIN = 1 << 20
# Python and libzmq bookkeeping of one reply, on top of its frames (counted against --max-inflight-bytes).
REPLY_OVERHEAD_BYTES = 1024
# Error replies unsent (held, or in libzmq) beyond which more are dropped: per identity (a client that sends bad
# requests and reads nothing), and in all (a flood from many identities); about 1.5 KB each with the bookkeeping.
ERROR_REPLIES_MAX_UNSENT_PER_IDENTITY = 1000
ERROR_REPLIES_MAX_UNSENT = 10_000


@dataclass
class _HeldReply:
    frames: list
    request_id: bytes
    subscribers_needed: int
    size: int = 0  # counted in the admission's bytes in flight until libzmq lets go of the frames
    is_error: bool = False
    deadline: float = field(default_factory=lambda: time.monotonic() + HOLD_TIMEOUT_S)


class ReplyPublisher:
    """Owns the XPUB socket: tracks subscriptions and sends each held reply once its identity can receive it."""

    def __init__(self, socket: zmq.asyncio.Socket, admission: Admission, faults: RateLimitedLog,
                 on_identity_gone: Optional[Callable[[bytes, int], None]] = None):
        self.socket = socket
        self.admission = admission
        self.faults = faults
        # Called with (identity, SUBSCRIBEs it had) when the last subscriber of an identity leaves.
        self.on_identity_gone = on_identity_gone
        self._subscriptions: dict[bytes, int] = defaultdict(int)  # SUBSCRIBEs seen per identity
        self._new_instances: dict[bytes, int] = defaultdict(int)  # RID-1 requests seen per identity
        self._held: dict[bytes, deque] = defaultdict(deque)
        self._unsent_errors: dict[bytes, int] = {}  # error replies held or in libzmq, per identity
        self._unsent_errors_total = 0
        self._sending: list[tuple[zmq.MessageTracker, bytes, _HeldReply]] = []  # replies libzmq still holds
        admission.watch_replies(self.release_sent)
        self._wakeup = asyncio.Event()
        self._emptied = asyncio.Event()

    def note_request(self, request: Request) -> int:
        """Record an incoming request; returns how many subscribers its reply must wait for."""
        if request.request_id == b"1":
            self._new_instances[request.identity] += 1
            return self._new_instances[request.identity]
        return 1

    def publish(self, identity: bytes, frames: list, request_id: bytes, subscribers_needed: int, *,
                is_error: bool = False) -> None:
        self.release_sent()
        if is_error and (self._unsent_errors.get(identity, 0) >= ERROR_REPLIES_MAX_UNSENT_PER_IDENTITY
                         or self._unsent_errors_total >= ERROR_REPLIES_MAX_UNSENT):
            self.faults.warning("unsent error replies", "dropping the error reply to request %s of %r: %d error "
                                "replies to it and %d to all clients are unsent (nobody reads them)",
                                request_id[:20].decode(), identity[:40], self._unsent_errors.get(identity, 0),
                                self._unsent_errors_total)
            return
        reply = _HeldReply(frames, request_id, subscribers_needed, sum(len(frame) for frame in frames)
                           + REPLY_OVERHEAD_BYTES, is_error)
        self.admission.hold_reply(reply.size)
        if is_error:
            self._unsent_errors[identity] = self._unsent_errors.get(identity, 0) + 1
            self._unsent_errors_total += 1
        self._held[identity].append(reply)
        self._emptied.clear()
        self._wakeup.set()

    def _forget(self, identity: bytes, reply: _HeldReply) -> None:
        """The reply was sent or dropped: its bytes no longer count."""
        self.admission.release_reply(reply.size)
        if reply.is_error:
            self._unsent_errors_total -= 1
            left = self._unsent_errors[identity] - 1
            if left:
                self._unsent_errors[identity] = left
            else:
                del self._unsent_errors[identity]

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
                pending = self._held or self._sending
                await asyncio.wait_for(self._wakeup.wait(), FLUSH_INTERVAL_S if pending else None)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            await self._flush()

    async def wait_until_sent(self) -> None:
        """Returns once no reply is held (each one was sent, or dropped after HOLD_TIMEOUT_S without subscriber)."""
        if self._held:
            await self._emptied.wait()

    async def _flush(self) -> None:
        self.release_sent()
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
                    self.faults.warning("no subscriber", "dropping the reply to request %s of %r: nobody subscribed "
                                        "within %.0fs", reply.request_id[:20].decode(), identity[:40], HOLD_TIMEOUT_S)
                    self._forget(identity, reply)
                    continue
                self._sending.append((await self._send(reply.frames), identity, reply))
            if not queue:
                del self._held[identity]
                if not self._subscriptions.get(identity):
                    self._new_instances.pop(identity, None)  # a client that never subscribed: forget it
        if not self._held:
            self._emptied.set()

    async def _send(self, frames: list) -> zmq.MessageTracker:
        """Send a reply with its largest frame shared with libzmq, not copied: its tracker says when libzmq let go."""
        largest = max(range(len(frames)), key=lambda i: len(frames[i]))
        frames = list(frames)
        frames[largest] = zmq.Frame(frames[largest], copy=False, track=True)
        await self.socket.send_multipart(frames, copy=False)
        return frames[largest].tracker

    def release_sent(self) -> None:
        """Forget the replies libzmq has written out (or dropped, their subscriber gone)."""
        if not self._sending:
            return
        still_sending = []
        for tracker, identity, reply in self._sending:
            if tracker.done:
                self._forget(identity, reply)
            else:
                still_sending.append((tracker, identity, reply))
        self._sending = still_sending


@dataclass
class ZmqSockets:
    """The two bound sockets. Bound first thing at start, so a port in use is refused before any slow work."""

    context: zmq.asyncio.Context
    receiver: zmq.asyncio.Socket
    sender: zmq.asyncio.Socket
    zap: Optional[ZapHandler] = None  # with CURVE: admits the allowed clients (ZmqFrontend.serve runs it)

    @classmethod
    def bind(cls, *, ip: str, port: int, port_out: int, max_request_bytes: int = -1,
             curve_certificate: Optional[Path] = None, curve_allowed_clients: Optional[Path] = None) -> "ZmqSockets":
        curve = None
        if curve_certificate is not None:
            curve = CurveServerKeys.load(curve_certificate, curve_allowed_clients)
            log.info("CURVE on: encrypted connections, %d client key(s) allowed from %s", len(curve.allowed),
                     curve_allowed_clients)
        context = zmq.asyncio.Context()
        zap = ZapHandler(context, curve) if curve is not None else None  # before any port is open: see security.py
        receiver = context.socket(zmq.PULL)
        sender = context.socket(zmq.XPUB)
        for socket in (receiver, sender):
            socket.setsockopt(zmq.LINGER, 0)
            set_tcp_keepalive(socket)  # idle clients stay connected for days behind NAT and firewalls
            if curve is not None:
                curve.make_server(socket)
        if max_request_bytes > 0:  # a huge frame is never buffered: libzmq drops its sender's connection instead
            receiver.setsockopt(zmq.MAXMSGSIZE, max_request_bytes + FRAME_SIZE_MARGIN)
        sender.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every SUBSCRIBE, also of clones sharing an identity
        sender.setsockopt(zmq.SNDHWM, 0)  # never drop replies a client has not read yet
        sender.setsockopt(zmq.XPUB_NODROP, 1)
        sockets = cls(context, receiver, sender, zap)
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
        if self.zap is not None:
            self.zap.close()
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
        self.faults = RateLimitedLog(log)
        self.publisher = ReplyPublisher(sockets.sender, service.admission, self.faults,
                                        on_identity_gone=self._cancel_abandoned)
        self.max_request_bytes = service.config.zmq_max_request_bytes
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
        if self.sockets.zap is not None:
            self._background.append(asyncio.create_task(self.sockets.zap.serve()))
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
            frames = await self.receiver.recv_multipart(copy=False)  # Frames: they carry the sender's address
            self._spawn(self._handle([frame.bytes for frame in frames], Sender.of(frames[0])))

    def _spawn(self, coroutine: Awaitable) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, frames: list, sender: Sender) -> None:
        size = sum(len(frame) for frame in frames)
        if size > self.max_request_bytes:
            self._refuse(frames, RequestTooLarge(
                f"the request has {size} bytes; this server accepts at most {self.max_request_bytes} per ZeroMQ "
                f"request (--zmq-max-request-bytes): split it"), "request too large")
            return
        try:
            request = decode_request(frames)
        except ProtocolError as e:
            self._refuse(frames, InvalidRequest(f"malformed request: {e}"), "malformed frames")
            return
        if request.message == TERMINATION:
            if sender.may_terminate():
                log.info("received TERMINATION from %s: shutting down", sender)
                self.on_terminate()
                return
            refusal = Unauthorized(f"TERMINATION is obeyed only from the server's own host or from a client "
                                   f"authenticated with CURVE keys, not from {sender.address} (docs/SECURITY.md)")
            log.warning("refused TERMINATION from %s: not local and not a CURVE client; still serving", sender)
            self.publisher.publish(request.identity, encode_error_reply(
                request.identity, refusal.message, refusal.kind, request.request_id), request.request_id,
                self.publisher.note_request(request))
            return
        needed = self.publisher.note_request(request)
        if request.is_command:
            self.statistic.record_command(request.identity)
            reply = self.config_reply(request)
            if request.message == SHOW_STATUS:
                reply = {**reply, "statistic": self.statistic.value()}
            frames = encode_json_reply(request.identity, reply, request.request_id)
        else:
            try:
                texts = request.texts()
            except ProtocolError as e:
                self._refuse(frames, InvalidRequest(f"malformed payload: {e}"), "malformed payload", needed)
                return
            self.statistic.record_data(request.identity, request.length)
            frames = await self._encode(request, texts, needed)
        self.publisher.publish(request.identity, frames, request.request_id, needed,
                               is_error=len(frames) == 3 and not request.is_command)

    def _refuse(self, frames: list, error: BridgeError, reason: str, subscribers_needed: int = 1) -> None:
        """A message that is no valid request: logged (rate-limited per ``reason``), and answered where it says whom
        to answer."""
        self.metrics.rejected("zmq", error.kind, self.service.name)
        address = request_address(frames)
        self.faults.warning(reason, "refused a ZeroMQ message of %d frames %r, %s: %s",
                            len(frames), [bytes(frame[:40]) for frame in frames[:4]],
                            "answered" if address else "not answered (no identity and RID in frames 0 and 2)",
                            error.message)
        if address:
            identity, request_id = address
            self.publisher.publish(identity, encode_error_reply(identity, error.message, error.kind, request_id),
                                   request_id, subscribers_needed, is_error=True)

    def _cancel_abandoned(self, identity: bytes, subscribed: int) -> None:
        """The last subscriber of ``identity`` left: stop the requests whose own subscriber had come and gone. A
        request whose subscriber has not arrived yet (a slow joiner, or a new clone sharing the identity) is kept."""
        for task, needed in list(self._encoding.get(identity, {}).items()):
            if needed <= subscribed and not task.done():
                self._abandoned.add(task)
                task.cancel()

    async def _encode(self, request: Request, texts: list, subscribers_needed: int = 1) -> list:
        task = asyncio.current_task()
        self._encoding[request.identity][task] = subscribers_needed
        with self.metrics.track("zmq", request.length, self.service.name) as tracker:
            try:
                if self._stopping:
                    raise ShuttingDown("the server is shutting down and accepts no new requests")
                result = await self.service.encode(texts, client=request.identity)
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
                self.faults.warning(kind, "request %s of %r failed: %s: %s", request.request_id[:20].decode(),
                                    request.identity[:40], kind, message)
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
