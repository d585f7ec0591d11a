"""Servers made of real ZeroMQ sockets on free ports, standing in for a bert-as-service server in unit tests.

- ``silent_server()``: a PULL + XPUB pair that never answers (requests can be read off its PULL socket).
- ``scripted_server(handler)``: a server in a thread answering each request with what ``handler`` returns (any frames,
  any delay, duplicates, nothing); ``fake_bert`` is the default handler: a tiny deterministic server whose embedding
  rows identify their sentences. Like the bridge, it holds a reply until a SUBSCRIBE matching its identity has
  arrived, so tests never race the slow joiner.

Plain context managers, not fixtures: a conftest.py here would shadow the ``conftest`` module other tests import.
"""
from __future__ import annotations

import contextlib
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import zmq

from bert_serving.client import protocol

Plan = Union[List[bytes], Tuple[float, List[bytes]]]  # frames, or (delay in seconds, frames)


def fake_embedding(texts: Sequence) -> np.ndarray:
    """One row per sentence that identifies it: [crc32 of the text, its length, 0, 1] (exact in float32)."""
    keys = [text if isinstance(text, str) else " ".join(text) for text in texts]
    return np.array([[zlib.crc32(key.encode()) % 2**20, len(key), 0, 1] for key in keys], dtype=np.float32)


def fake_config(*, max_batch_size: int = 256, show_tokens_to_client: bool = False) -> dict:
    return {"server_version": protocol.SERVER_VERSION, "max_seq_len": 25, "max_batch_size": max_batch_size,
            "show_tokens_to_client": show_tokens_to_client}


def fake_bert(request: protocol.Request, *, config: Optional[dict] = None) -> List[Plan]:
    """Answer like a bert-as-service server: config for SHOW_CONFIG/SHOW_STATUS, fake embeddings otherwise."""
    config = config or fake_config()
    if request.is_command:
        return [protocol.encode_json_reply(request.identity, config, request.request_id)]
    texts = request.texts()
    tokens = [t.split() if isinstance(t, str) else list(t) for t in texts] if config["show_tokens_to_client"] else ""
    return [protocol.encode_ndarray_reply(request.identity, fake_embedding(texts), request.request_id, tokens)]


@dataclass
class ScriptedServer:
    handler: Callable[[protocol.Request], Iterable[Plan]]
    port: int = 0
    port_out: int = 0
    requests: List[protocol.Request] = field(default_factory=list)
    subscriptions: List[bytes] = field(default_factory=list)  # every SUBSCRIBE seen, clones included
    max_in_flight_seen: int = 0  # the most encode requests received and not yet answered, at any moment
    replies_sent: List[List[bytes]] = field(default_factory=list)

    def encode_requests(self) -> List[protocol.Request]:
        return [r for r in self.requests if not r.is_command]


@contextlib.contextmanager
def silent_server() -> Iterator[Tuple[int, int, zmq.Socket]]:
    """(port, port_out, pull): a server that receives requests and subscriptions and never answers."""
    with zmq.Context() as context:
        pull, xpub = context.socket(zmq.PULL), context.socket(zmq.XPUB)
        for socket in (pull, xpub):
            socket.setsockopt(zmq.LINGER, 0)
        port, port_out = pull.bind_to_random_port("tcp://127.0.0.1"), xpub.bind_to_random_port("tcp://127.0.0.1")
        try:
            yield port, port_out, pull
        finally:
            pull.close()
            xpub.close()


@contextlib.contextmanager
def scripted_server(handler: Optional[Callable[[protocol.Request], Iterable[Plan]]] = None) -> Iterator[ScriptedServer]:
    """A ScriptedServer in a thread for the duration of the block; a failure inside it fails the caller."""
    server = ScriptedServer(handler=handler or fake_bert)
    ready, stop = threading.Event(), threading.Event()
    errors: list = []
    thread = threading.Thread(target=_serve, args=(server, ready, stop, errors), daemon=True)
    thread.start()
    assert ready.wait(10), "the scripted server did not start"
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
    assert not errors, f"the scripted server failed: {errors[0]!r}"


def _serve(server: ScriptedServer, ready: threading.Event, stop: threading.Event, errors: list) -> None:
    try:
        with zmq.Context() as context:
            pull, xpub = context.socket(zmq.PULL), context.socket(zmq.XPUB)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            for socket in (pull, xpub):
                socket.setsockopt(zmq.LINGER, 0)
            server.port = pull.bind_to_random_port("tcp://127.0.0.1")
            server.port_out = xpub.bind_to_random_port("tcp://127.0.0.1")
            ready.set()
            subscribed: set = set()
            scheduled: list = []  # [due time, frames, RID of an encode request or None]
            unanswered: set = set()
            poller = zmq.Poller()
            poller.register(pull, zmq.POLLIN)
            poller.register(xpub, zmq.POLLIN)
            while not stop.is_set():
                events = dict(poller.poll(5))
                if xpub in events:
                    event = xpub.recv()
                    if event[:1] == b"\x01":
                        subscribed.add(event[1:])
                        server.subscriptions.append(event[1:])
                if pull in events:
                    request = protocol.decode_request(pull.recv_multipart())
                    server.requests.append(request)
                    if not request.is_command:
                        unanswered.add((request.identity, request.request_id))
                        server.max_in_flight_seen = max(server.max_in_flight_seen, len(unanswered))
                    for plan in server.handler(request):
                        delay, frames = plan if isinstance(plan, tuple) else (0.0, plan)
                        scheduled.append([time.monotonic() + delay, frames, (request.identity, request.request_id)])
                now = time.monotonic()
                # A SUB subscription is a prefix filter: a reply can be delivered once a prefix of its ID is subscribed.
                deliverable = [item for item in scheduled
                               if item[0] <= now and any(bytes(item[1][0]).startswith(s) for s in subscribed)]
                for item in deliverable:
                    xpub.send_multipart(item[1])
                    server.replies_sent.append(item[1])
                    unanswered.discard(item[2])
                    scheduled.remove(item)
            pull.close()
            xpub.close()
    except Exception as e:  # reported by the fixture: a failing server must fail the test, not hang it
        errors.append(e)
        ready.set()
