"""BertClient: the 1.10 API over one PUSH socket (requests) and one SUB socket (replies), used from one thread.

Replies are matched to requests by their RID. A reply to a RID the client no longer waits for (late after a timeout,
a duplicate, a clone's request under a shared identity) is dropped; a reply to another pending RID is kept until it
is asked for. Every wait obeys ``timeout``. A list longer than the server's ``max_batch_size`` is streamed as several
requests, at most ``max_in_flight`` at a time, and put back together in order; encode_async keeps as many sentences
in flight.
"""
from __future__ import annotations

import time
import uuid
import warnings
from collections import namedtuple
from typing import Any, Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import zmq

from . import protocol
from ._version import __version__
from .connection import CurveKeys, HandshakeWatch, PathOrKey, set_tcp_keepalive
from .errors import (AuthenticationError, BertTimeoutError, ClientClosedError, InputTypeError, InputValueError,
                     ProtocolError, ServerError, VersionMismatchError)
from .inputs import check_texts, longest_sentence
from .progress import make_progress

__all__ = ["BertClient", "Response"]

Response = namedtuple("Response", ["id", "embedding", "tokens"])

# The original server's default; the chunk size when the server's own value is unknown (e.g. ignore_all_checks).
DEFAULT_MAX_BATCH_SIZE = 256
# Full batches (max_batch_size sentences) of one streamed encode or encode_async in flight at once: one being
# encoded while the next waits keeps the server busy; more would only queue inside it, where a CPU server that
# encodes ~100 sentences/s would let them run into its inference deadline.
DEFAULT_MAX_IN_FLIGHT = 2
OUTPUT_FORMATS = ("ndarray", "list")


class BertClient:
    """A client of a bert-as-service server (1.10 protocol). Not thread-safe: use ConcurrentBertClient for threads.

    :param ip: the server's address
    :param port: the server's request port (PULL)
    :param port_out: the server's reply port (PUB/XPUB)
    :param output_fmt: ``'ndarray'`` or ``'list'`` (list of lists of floats)
    :param show_server_config: print the server's config when connecting
    :param identity: this client's identity (str or bytes); a uuid4 when empty. Clients sharing one all receive the
        replies to any of them (multicast, see ``listen``)
    :param check_version: require the server to speak protocol 1.10.0 (VersionMismatchError, an AttributeError)
    :param check_length: warn when a sentence has more words than the server's ``max_seq_len``
    :param check_token_info: ask whether the server sends tokens (needed for ``show_tokens=True``)
    :param ignore_all_checks: do not contact the server when constructing
    :param timeout: milliseconds to wait for any reply (-1: forever); BertTimeoutError (a TimeoutError) after that
    :param max_in_flight: how many batches of ``max_batch_size`` sentences a streamed encode or encode_async keeps
        in flight (keyword only); raise it for a server with several model instances
    :param server_public_key: CURVE (keyword only, with ``client_certificate``): the server's public certificate file
        (``NAME.key`` from bert-serving-keys) or its 40-character z85 key. See docs/SECURITY.md
    :param client_certificate: CURVE (keyword only): this client's secret certificate file (``NAME.key_secret``);
        its public key must be in the server's allowed folder, else AuthenticationError (a ConnectionError)
    """

    def __init__(self, ip: str = "localhost", port: int = 5555, port_out: int = 5556, output_fmt: str = "ndarray",
                 show_server_config: bool = False, identity: Union[str, bytes, None] = None, check_version: bool = True,
                 check_length: bool = True, check_token_info: bool = True, ignore_all_checks: bool = False,
                 timeout: int = -1, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 server_public_key: Optional[PathOrKey] = None, client_certificate: Optional[PathOrKey] = None):
        if output_fmt not in OUTPUT_FORMATS:
            raise InputValueError(f"output_fmt must be 'ndarray' or 'list', got {output_fmt!r}")
        if max_in_flight < 1:
            raise InputValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.identity = _identity_bytes(identity)
        curve_keys = CurveKeys.load(server_public_key=server_public_key, client_certificate=client_certificate)
        self.ip = ip
        self.port = port
        self.port_out = port_out
        self.output_fmt = output_fmt
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        # Learnt from server_config when the checks run: 0 = no length check, None = the server has no limit.
        self.length_limit: Optional[int] = 0
        self.token_info_available = False
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE

        self._request_id = 0
        self._pending: Set[int] = set()
        self._stash: Dict[int, List[bytes]] = {}  # frames of replies to pending RIDs nobody has asked for yet
        self._num_ignored_reply = 0
        self._closed = False
        self._context = zmq.Context()
        self._sender = self._context.socket(zmq.PUSH)
        self._sender.setsockopt(zmq.LINGER, 0)
        self._receiver = self._context.socket(zmq.SUB)
        self._receiver.setsockopt(zmq.LINGER, 0)
        # No receive high-water mark: a reply dropped there is a request that never completes.
        self._receiver.setsockopt(zmq.RCVHWM, 0)
        self._receiver.setsockopt(zmq.SUBSCRIBE, self.identity)
        for socket in (self._sender, self._receiver):
            set_tcp_keepalive(socket)
            if curve_keys is not None:
                curve_keys.apply(socket)
        self._handshakes: Optional[HandshakeWatch] = None
        self._poller = zmq.Poller()
        self._poller.register(self._receiver, zmq.POLLIN)
        if curve_keys is not None:
            self._handshakes = HandshakeWatch(ip, [(self._sender, port), (self._receiver, port_out)])
            for monitor in self._handshakes.monitors:
                self._poller.register(monitor, zmq.POLLIN)
        try:
            try:
                self._sender.connect(f"tcp://{ip}:{port}")
                self._receiver.connect(f"tcp://{ip}:{port_out}")
            except zmq.ZMQError as e:
                raise InputValueError(f"cannot connect to tcp://{ip}:{port} and :{port_out}: {e}") from e
            if not ignore_all_checks and (check_version or show_server_config or check_length or check_token_info):
                self._apply_server_config(self.server_config, check_version=check_version, check_length=check_length,
                                          check_token_info=check_token_info, show_server_config=show_server_config)
        except BaseException:
            self.close()  # a constructor that raises must not leak sockets
            raise

    # -- the 1.10 API ----------------------------------------------------------------------------------------------

    @property
    def server_config(self) -> dict:
        """The server's configuration (a SHOW_CONFIG round trip)."""
        return self._command(protocol.SHOW_CONFIG)

    @property
    def server_status(self) -> dict:
        """The server's configuration and ``statistic`` (a SHOW_STATUS round trip)."""
        return self._command(protocol.SHOW_STATUS)

    @property
    def status(self) -> dict:
        """This client's own state; nothing is sent."""
        return {
            "identity": self.identity,
            "num_request": self._request_id,
            "num_pending_request": len(self._pending),
            "pending_request": set(self._pending),
            "output_fmt": self.output_fmt,
            "port": self.port,
            "port_out": self.port_out,
            "server_ip": self.ip,
            "client_version": __version__,
            "timeout": self.timeout,
            "max_batch_size": self.max_batch_size,
            "max_in_flight": self.max_in_flight,
            "num_ignored_reply": self._num_ignored_reply,
        }

    def encode(self, texts: Sequence, blocking: bool = True, is_tokenized: bool = False, show_tokens: bool = False,
               *, show_progress: bool = False) -> Any:
        """Encode sentences (``list[str]``, ``'a ||| b'`` for a pair) or token lists (``is_tokenized=True``).

        Returns an ndarray (or list of lists) with one row per sentence; ``(embeddings, tokens)`` with
        ``show_tokens=True`` when the server sends tokens; None with ``blocking=False`` (then use fetch/fetch_all).
        A blocking encode of more than ``max_batch_size`` sentences is streamed in chunks; ``show_progress=True``
        shows sentences/s (tqdm when installed).
        """
        if not blocking:
            self._submit(texts, is_tokenized)
            return None
        check_texts(texts, is_tokenized=is_tokenized)
        self._warn_about_length(texts, is_tokenized)
        embedding, tokens = self._encode_in_chunks(texts, show_progress)
        if show_tokens:
            if self.token_info_available:
                return embedding, tokens
            warnings.warn('"show_tokens=True", but the server does not send tokens to clients (or the client did not '
                          'ask: check_token_info=False / ignore_all_checks=True); start it with '
                          '"bert-serving-start -show_tokens_to_client"', stacklevel=2)
        return embedding

    def fetch(self, delay: float = 0.0) -> Iterator[Response]:
        """Yield ``Response(id, embedding, tokens)`` for each pending request, in arrival order (not sending order)."""
        time.sleep(delay)
        while self._pending:
            yield self._response(self._receive(self._pending))

    def fetch_all(self, sort: bool = True, concat: bool = False) -> Any:
        """The embeddings of every pending request (None when nothing is pending), sorted by request id
        (= sending order) when ``sort``, concatenated into one array (or one list) when ``concat``.

        A server error for one request is raised after the others were received, so nothing is left pending.
        """
        if not self._pending:
            return None
        responses: List[Response] = []
        first_error: Optional[ServerError] = None
        while self._pending:
            try:
                responses.append(self._response(self._receive(self._pending)))
            except ServerError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        if sort:
            responses.sort(key=lambda response: response.id)
        embeddings = [response.embedding for response in responses]
        if not concat:
            return embeddings
        if self.output_fmt == "list":
            return [row for embedding in embeddings for row in embedding]
        return _concatenate_rows(embeddings)

    def encode_async(self, batch_generator: Iterable[Sequence], max_num_batch: Optional[int] = None,
                     delay: float = 0.1, **kwargs: Any) -> Iterator[Response]:
        """Encode each batch the generator yields; yield ``Response(id, embedding, tokens)`` as replies arrive.

        At most ``max_in_flight * max_batch_size`` sentences (and at least one batch) are in flight. The generator
        is read as replies come back, so a slow generator never makes the results end early, and ``delay`` (kept
        for compatibility) is not needed. ``kwargs``: ``is_tokenized``; ``blocking`` and ``show_tokens`` are
        accepted and ignored, as every Response carries the tokens the server sent.
        """
        is_tokenized = bool(kwargs.pop("is_tokenized", False))
        kwargs.pop("blocking", None)
        kwargs.pop("show_tokens", None)
        if kwargs:
            raise InputTypeError(f"encode_async() got unexpected keyword arguments: {sorted(kwargs)}")
        batches = iter(batch_generator)
        if max_num_batch:
            batches = (batch for _, batch in zip(range(max_num_batch), batches))
        return self._pipeline(batches, is_tokenized)

    def listen(self) -> Iterator[Any]:
        """Yield every embedding the server sends to this identity, including the replies to requests of other
        clients sharing it (multicast); config, status and error replies are skipped. Waits obey ``timeout``."""
        while True:
            frames = self._receive_frames(self._deadline(), ())
            if bytes(frames[0]) != self.identity:
                continue
            try:
                reply = protocol.decode_reply(frames)
            except ProtocolError:
                self._num_ignored_reply += 1
                continue
            self._pending.discard(reply.request_id)
            if isinstance(reply.payload, np.ndarray):
                yield self._format(reply.payload)

    def close(self) -> None:
        """Close both sockets; nothing is sent to the server. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._handshakes is not None:
            self._handshakes.close()
        self._sender.close()
        self._receiver.close()
        self._context.term()

    def __enter__(self) -> BertClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(ip={self.ip!r}, port={self.port}, port_out={self.port_out}, "
                f"identity={self.identity!r}, timeout={self.timeout})")

    # -- requests --------------------------------------------------------------------------------------------------

    def _apply_server_config(self, config: dict, *, check_version: bool, check_length: bool, check_token_info: bool,
                             show_server_config: bool) -> None:
        if check_version:
            version = _required(config, "server_version")
            if version != protocol.SERVER_VERSION:
                raise VersionMismatchError(
                    f"version mismatch! the server speaks {version!r}, this client speaks {protocol.SERVER_VERSION!r} "
                    "(bert-as-service 1.10); disable the check with BertClient(check_version=False)")
        if check_length:
            max_seq_len = _required(config, "max_seq_len")
            self.length_limit = None if max_seq_len is None else int(max_seq_len)
        if check_token_info:
            self.token_info_available = bool(_required(config, "show_tokens_to_client"))
        max_batch_size = config.get("max_batch_size")
        if isinstance(max_batch_size, int) and max_batch_size > 0:
            self.max_batch_size = max_batch_size
        if show_server_config:
            print("server config:")
            for key, value in config.items():
                print("%30s\t=\t%-30s" % (key, value))

    def _command(self, command: bytes) -> dict:
        request_id = self._send(command, 0)
        reply = self._receive((request_id,))
        if not isinstance(reply.payload, dict):
            raise ProtocolError(f"expected a JSON reply to {command.decode()}, got an array")
        return reply.payload

    def _submit(self, texts: Sequence, is_tokenized: bool) -> int:
        """Check and send one encode request without waiting; its RID."""
        check_texts(texts, is_tokenized=is_tokenized)
        self._warn_about_length(texts, is_tokenized)
        return self._send(list(texts), len(texts))

    def _encode_in_chunks(self, texts: Sequence, show_progress: bool) -> Tuple[Any, Any]:
        size = self.max_batch_size
        chunks = [list(texts[start:start + size]) for start in range(0, len(texts), size)]
        replies: List[Optional[protocol.Reply]] = [None] * len(chunks)
        in_flight: Dict[int, int] = {}  # RID -> chunk index
        progress = make_progress(len(texts), enabled=show_progress)
        num_sent = 0
        try:
            while num_sent < len(chunks) or in_flight:
                while num_sent < len(chunks) and len(in_flight) < self.max_in_flight:
                    in_flight[self._send(chunks[num_sent], len(chunks[num_sent]))] = num_sent
                    num_sent += 1
                reply = self._receive(in_flight)
                index = in_flight.pop(reply.request_id)
                replies[index] = reply
                progress.update(len(chunks[index]))
        finally:
            self._forget(in_flight)  # after an error: the chunks still out are abandoned, their replies ignored
            progress.close()
        embedding = _concatenate_rows([self._embedding_of(reply) for reply in replies])
        return self._format(embedding), _joined_tokens([reply.tokens for reply in replies])

    def _pipeline(self, batches: Iterator[Sequence], is_tokenized: bool) -> Iterator[Response]:
        in_flight: Dict[int, int] = {}  # RID -> sentences
        budget = self.max_in_flight * self.max_batch_size
        end = object()
        exhausted = False
        try:
            while True:
                while not exhausted and (not in_flight or sum(in_flight.values()) < budget):
                    batch = next(batches, end)
                    if batch is end:
                        exhausted = True
                    else:
                        in_flight[self._submit(batch, is_tokenized)] = len(batch)
                if not in_flight:
                    return
                reply = self._receive(in_flight)
                del in_flight[reply.request_id]
                yield self._response(reply)
        finally:
            self._forget(in_flight)

    def _warn_about_length(self, texts: Sequence, is_tokenized: bool) -> None:
        if self.length_limit is None:
            warnings.warn('the server does not restrict "max_seq_len": it pads each batch to its longest sentence; '
                          "restrict the length on the client side for better efficiency", stacklevel=3)
        elif self.length_limit and longest_sentence(texts, is_tokenized=is_tokenized) > self.length_limit:
            warnings.warn(f'some of your sentences have more tokens than "max_seq_len={self.length_limit}" set on the '
                          "server: they are truncated. Start the server with a larger -max_seq_len, or silence this "
                          "with BertClient(check_length=False)", stacklevel=3)

    # -- the sockets -----------------------------------------------------------------------------------------------

    def _send(self, message: Union[bytes, list], length: int) -> int:
        if self._closed:
            raise ClientClosedError("this BertClient is closed")
        self._request_id += 1
        frames = protocol.encode_request(self.identity, message, self._request_id)
        # PUSH blocks only when its queue is full (server gone or far behind): that wait obeys timeout too.
        self._sender.setsockopt(zmq.SNDTIMEO, self._timeout_ms())
        try:
            self._sender.send_multipart(frames)
        except zmq.Again as e:
            raise self._timeout_error(f"request {self._request_id} could not be sent", ()) from e
        self._pending.add(self._request_id)
        return self._request_id

    def _receive(self, request_ids: Collection[int]) -> protocol.Reply:
        """The reply to one of ``request_ids`` (all pending), from the stash or the socket; that RID is no longer
        pending. ServerError for an error reply; BertTimeoutError, abandoning ``request_ids``, after ``timeout``."""
        deadline = self._deadline()
        while True:
            request_id = self._stashed(request_ids)
            if request_id is not None:
                frames = self._stash.pop(request_id)
            else:
                frames = self._receive_frames(deadline, request_ids)
                request_id = protocol.reply_request_id(frames)
                if request_id not in self._pending or bytes(frames[0]) != self.identity:
                    # Late (its wait timed out), duplicate, a clone's, or another identity sharing our prefix.
                    self._num_ignored_reply += 1
                    continue
                if request_id not in request_ids:
                    self._stash[request_id] = frames
                    continue
            self._pending.discard(request_id)
            reply = protocol.decode_reply(frames)
            if reply.error is not None:
                raise ServerError(reply.error, error_type=reply.error_type, request_id=request_id)
            return reply

    def _stashed(self, request_ids: Collection[int]) -> Optional[int]:
        if not self._stash:
            return None
        # Scan the smaller of the two: fetch_all over thousands of pending requests stays linear.
        if len(self._stash) < len(request_ids):
            return next((request_id for request_id in self._stash if request_id in request_ids), None)
        return next((request_id for request_id in request_ids if request_id in self._stash), None)

    def _receive_frames(self, deadline: Optional[float], request_ids: Collection[int]) -> List[bytes]:
        if self._closed:
            raise ClientClosedError("this BertClient is closed")
        while True:
            remaining_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(self._poller.poll(remaining_ms))
            if self._receiver in ready:
                return self._receiver.recv_multipart(zmq.NOBLOCK)
            if self._handshakes is not None:
                try:
                    self._handshakes.check()  # a monitor event woke us: raises when the keys do not fit
                except AuthenticationError:
                    self._forget(request_ids)
                    raise
            if not ready and remaining_ms is not None:
                waited_for = tuple(request_ids)
                self._forget(waited_for)
                raise self._timeout_error(f"no reply to request(s) {sorted(waited_for)}", waited_for)

    def _forget(self, request_ids: Iterable[int]) -> None:
        for request_id in list(request_ids):
            self._pending.discard(request_id)
            self._stash.pop(request_id, None)

    def _timeout_ms(self) -> int:
        return -1 if self.timeout is None or self.timeout < 0 else int(self.timeout)

    def _deadline(self) -> Optional[float]:
        timeout_ms = self._timeout_ms()
        return None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def _timeout_error(self, what: str, request_ids: Sequence[int]) -> BertTimeoutError:
        curve = "" if self._handshakes is None else f" With CURVE keys: {self._handshakes.diagnosis()}."
        return BertTimeoutError(
            f"{what} within timeout={self.timeout} ms (server {self.ip}, port={self.port}, port_out={self.port_out}): "
            "is the server up, are port and port_out right, is the timeout long enough for this much data? Late "
            f"replies will be ignored; the client stays usable.{curve}", timeout_ms=self._timeout_ms(),
            request_ids=request_ids)

    # -- replies ---------------------------------------------------------------------------------------------------

    def _embedding_of(self, reply: protocol.Reply) -> np.ndarray:
        if not isinstance(reply.payload, np.ndarray):
            raise ProtocolError(f"expected embeddings in the reply to request {reply.request_id}, "
                                f"got {reply.payload!r}")
        return reply.payload

    def _format(self, embedding: np.ndarray) -> Any:
        return embedding.tolist() if self.output_fmt == "list" else embedding

    def _response(self, reply: protocol.Reply) -> Response:
        return Response(reply.request_id, self._format(self._embedding_of(reply)), reply.tokens)


def _identity_bytes(identity: Union[str, bytes, None]) -> bytes:
    if isinstance(identity, str):
        identity = identity.encode("utf-8")  # 1.10 needed bytes and failed on str under Python 3
    if identity is not None and not isinstance(identity, bytes):
        raise InputTypeError(f"identity must be str or bytes, got {type(identity).__name__}")
    return identity or str(uuid.uuid4()).encode("ascii")


def _required(config: dict, key: str) -> Any:
    if key not in config:
        raise ProtocolError(f"the server's config lacks {key!r}: is it a bert-as-service server? "
                            "(or pass ignore_all_checks=True)")
    return config[key]


def _concatenate_rows(arrays: List[np.ndarray]) -> np.ndarray:
    """Stack replies along axis 0. Token-level replies ([B, T, D]) of a server without max_seq_len may differ in T:
    the shorter ones are padded with zeros, as the server pads the shorter sentences of one request."""
    if len(arrays) == 1:
        return arrays[0]
    if arrays[0].ndim == 3:
        longest = max(array.shape[1] for array in arrays)
        arrays = [np.pad(array, ((0, 0), (0, longest - array.shape[1]), (0, 0))) for array in arrays]
    return np.concatenate(arrays, axis=0)


def _joined_tokens(parts: List[Any]) -> Any:
    """One token list per sentence across chunks; whatever the server sent (``""``) when it sends no tokens."""
    if all(isinstance(part, list) for part in parts):
        return [tokens for part in parts for tokens in part]
    return parts[0]
