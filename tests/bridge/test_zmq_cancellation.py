"""The ZeroMQ front end stops the requests of a client that has gone, and only those (bridge/frontends/zmq_frontend.py).

Real sockets on loopback, the real ZmqFrontend and ReplyPublisher; the service core is a stand-in whose encode waits
until the test releases it, so the test sees exactly which requests were cancelled. The rule under test: when the last
subscriber of an identity leaves, its requests in flight are cancelled and get no reply -- except a request whose own
subscriber had not arrived yet (a clone sharing the identity that is still joining), which is served as usual.
"""
from __future__ import annotations

import asyncio
import uuid

import numpy as np
import zmq
import zmq.asyncio

from bert_bridge.core.admission import Admission
from bert_bridge.config import ServerConfig
from bert_bridge.metrics import BridgeMetrics
from bert_bridge.core.service import EncodeResult
from bert_bridge.statistics import ServerStatistic
from bert_bridge.frontends.zmq_frontend import ZmqFrontend, ZmqSockets
from bert_serving.client.protocol import decode_reply, encode_request
from harness import free_port

TIMEOUT_S = 10


class HeldService:
    """encode() waits until ``release``; records which calls started and which were cancelled, by their first text."""

    name = "bert"  # the served model, as the front end labels its metrics

    def __init__(self):
        self.config = ServerConfig()  # the default limits, which the front end reads from its service
        self.admission = Admission(self.config)
        self.started: dict[str, asyncio.Event] = {}
        self.cancelled: set[str] = set()
        self.clients: dict[str, object] = {}
        self._release = asyncio.Event()

    async def encode(self, texts, *, client=None) -> EncodeResult:
        name = texts[0]
        self.clients[name] = client
        self.started.setdefault(name, asyncio.Event()).set()
        try:
            await self._release.wait()
        except asyncio.CancelledError:
            self.cancelled.add(name)
            raise
        return EncodeResult(embeddings=np.zeros((len(texts), 2), np.float32), tokens="")

    async def wait_started(self, name: str) -> None:
        await asyncio.wait_for(self.started.setdefault(name, asyncio.Event()).wait(), TIMEOUT_S)

    def release(self) -> None:
        self._release.set()


async def until(condition) -> None:
    for _ in range(int(TIMEOUT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_requests_of_a_gone_client_are_cancelled_but_a_still_joining_clone_is_served():
    async def scenario():
        port, port_out = free_port(), free_port()
        sockets = ZmqSockets.bind(ip="127.0.0.1", port=port, port_out=port_out)
        service = HeldService()
        metrics = BridgeMetrics()
        frontend = ZmqFrontend(sockets=sockets, service=service, statistic=ServerStatistic(), metrics=metrics,
                               config_reply=lambda request: {}, on_terminate=lambda: None)
        serving = asyncio.create_task(frontend.serve())
        context = zmq.asyncio.Context()

        def connect(kind, number, identity=None):
            socket = context.socket(kind)
            socket.setsockopt(zmq.LINGER, 0)
            if identity is not None:
                socket.setsockopt(zmq.SUBSCRIBE, identity)
            socket.connect(f"tcp://127.0.0.1:{number}")
            return socket

        identity = uuid.uuid4().hex.encode()
        push = connect(zmq.PUSH, port)
        first_clone = connect(zmq.SUB, port_out, identity)
        try:
            await until(lambda: frontend.publisher._subscriptions.get(identity, 0) == 1)
            await push.send_multipart(encode_request(identity, ["first clone"], 1))
            await service.wait_started("first clone")
            # A second clone of the same identity: its first request arrives before its subscription does.
            await push.send_multipart(encode_request(identity, ["second clone"], 1))
            await service.wait_started("second clone")

            first_clone.close(0)  # the identity's only subscriber leaves
            await until(lambda: "first clone" in service.cancelled)
            assert "second clone" not in service.cancelled

            second_clone = connect(zmq.SUB, port_out, identity)
            service.release()
            assert await second_clone.poll(TIMEOUT_S * 1000)
            reply = decode_reply(await second_clone.recv_multipart())
            assert reply.error is None and reply.payload.shape == (1, 2)
            assert not await second_clone.poll(300), "the gone client's request must get no reply"
            second_clone.close(0)
            assert service.clients["first clone"] == identity  # the scheduler takes turns by identity
            assert metrics.error_tally["ClientGone"] == 1
        finally:
            push.close(0)
            serving.cancel()
            await frontend.shutdown(timeout_s=1)
            await asyncio.gather(serving, return_exceptions=True)
            sockets.close()
            context.term()

    asyncio.run(scenario())
