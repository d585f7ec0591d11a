"""What a CURVE client is told when its handshakes fail, whichever event libzmq reports (connection.HandshakeWatch),
and the ZMTP greeting that tells a server without CURVE from a wrong server key (greeting.py).

libzmq reports a CURVE client meeting a server without CURVE as a mechanism mismatch or, when the server closed
first, as a failure with no detail. Real client sockets here meet a scripted TCP server that decides, connection by
connection, which of the two the client sees: each case is forced, so none depends on timing. The messages against
a real bridge (refused key, wrong server key, no CURVE) are checked in tests/bridge/test_security.py.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator, Sequence

import pytest
import zmq

from bert_serving.client import AuthenticationError
from bert_serving.client.connection import CurveKeys, HandshakeWatch
from bert_serving.client.greeting import GREETING_SIZE, PROBE, parse_mechanism, read_mechanism
from harness import REPO_ROOT

VERDICT_WAIT_S = 30  # a verdict comes within a second; this bound only keeps a broken watch from hanging the test
CLOSE = "close"  # a scripted connection closed at once, before a byte of greeting


def greeting(mechanism: bytes, *, major: int = 3) -> bytes:
    """A server's ZMTP 3.1 greeting, as libzmq writes it."""
    return PROBE[:10] + bytes([major, 1]) + mechanism.ljust(20, b"\0") + b"\0" + bytes(31)


@contextlib.contextmanager
def scripted_tcp_server(script: Sequence) -> Iterator[tuple[int, list]]:
    """A TCP server on a free port; connection i follows ``script[i]`` (the last entry repeats): CLOSE, or a
    mechanism whose greeting it sends before reading the peer's greeting (or until the peer leaves) and closing.
    Yields (port, the behaviour of each connection accepted so far)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # closing a socket does not wake a thread blocked in accept(): it looks now and then
    accepted: list = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            behaviour = script[min(len(accepted), len(script) - 1)]
            accepted.append(behaviour)
            with connection:
                if behaviour == CLOSE:
                    continue
                connection.sendall(greeting(behaviour))
                received = 0
                with contextlib.suppress(OSError):
                    while received < GREETING_SIZE:
                        chunk = connection.recv(GREETING_SIZE - received)
                        if not chunk:
                            break
                        received += len(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        done.set()
        thread.join(10)
        listener.close()


def verdict(port: int, *, reconnect_ivl_ms: int = 100) -> str:
    """Connect a CURVE client socket (with some server key) to ``port``; the AuthenticationError its watch raises."""
    context = zmq.Context()
    try:
        client = context.socket(zmq.PUSH)
        client.setsockopt(zmq.LINGER, 0)
        client.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        server_public, _ = zmq.curve_keypair()
        CurveKeys(server_public, *zmq.curve_keypair()).apply(client)
        watch = HandshakeWatch("127.0.0.1", [(client, port)])
        try:
            client.connect(f"tcp://127.0.0.1:{port}")
            deadline = time.monotonic() + VERDICT_WAIT_S
            with pytest.raises(AuthenticationError) as raised:
                while time.monotonic() < deadline:
                    zmq.select(watch.monitors, [], [], 1.0)
                    watch.check()
            return str(raised.value)
        finally:
            watch.close()
    finally:
        context.destroy(linger=0)


def no_curve(port: int) -> str:
    return (f"the server at 127.0.0.1:{port} does not speak CURVE: it runs without --curve-certificate; connect "
            "without server_public_key and client_certificate")


# -- a server without CURVE: one message, whichever event came ------------------------------------------------------

def test_a_mechanism_mismatch_says_the_server_has_no_curve():
    # The server's whole greeting arrives before it closes: libzmq reports a mechanism mismatch, which is certain.
    # The client does not reconnect within the test, so the one connection is the client's own: no probe was needed.
    with scripted_tcp_server([b"NULL"]) as (port, accepted):
        assert verdict(port, reconnect_ivl_ms=60_000) == no_curve(port)
    assert accepted == [b"NULL"]


def test_a_failure_without_detail_reads_the_greeting_and_says_the_same():
    # The server closes the client's connection before its greeting (what a busy libzmq server does after reading
    # the client's mechanism): no detail. The watch then reads the greeting itself (the second connection).
    with scripted_tcp_server([CLOSE, b"NULL"]) as (port, accepted):
        assert verdict(port, reconnect_ivl_ms=60_000) == no_curve(port)
    assert accepted == [CLOSE, b"NULL"]


# -- a server with CURVE, or one whose greeting cannot be read -------------------------------------------------------

def test_failed_handshakes_with_a_curve_server_blame_the_server_key():
    with scripted_tcp_server([b"CURVE"]) as (port, _):
        assert verdict(port) == (f"the CURVE handshake with 127.0.0.1:{port} failed 3 times: server_public_key is "
                                 "not this server's public key")


def test_a_server_whose_greeting_never_comes_gets_both_causes_in_one_sentence():
    with scripted_tcp_server([CLOSE]) as (port, _):
        message = verdict(port)
    why = f"the server closed the connection after 0 of the greeting's {GREETING_SIZE} bytes"
    assert message == (f"the CURVE handshake with 127.0.0.1:{port} failed 3 times: either the server runs without "
                       "--curve-certificate or server_public_key is not its public key (its greeting, which would "
                       f"tell, could not be read: {why})")
    documented = message.replace(f"127.0.0.1:{port}", "HOST:PORT").replace(why, "WHY")
    assert f'"{documented}"' in (REPO_ROOT / "docs" / "SECURITY.md").read_text()


# -- the greeting ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("curve_server", [False, True])
def test_the_probe_reads_a_real_zeromq_servers_mechanism(curve_server):
    context = zmq.Context()
    try:
        server = context.socket(zmq.XPUB)
        if curve_server:
            server.setsockopt(zmq.CURVE_SERVER, 1)
            server.setsockopt(zmq.CURVE_SECRETKEY, zmq.curve_keypair()[1])
        port = server.bind_to_random_port("tcp://127.0.0.1")
        assert read_mechanism("127.0.0.1", port, timeout_s=10) == ("CURVE" if curve_server else "NULL")
    finally:
        context.destroy(linger=0)


def test_the_parser_reads_the_mechanism_and_says_why_when_there_is_none():
    assert parse_mechanism(greeting(b"NULL")) == "NULL"
    assert parse_mechanism(greeting(b"CURVE")) == "CURVE"
    assert parse_mechanism(greeting(b"PLAIN")) == "PLAIN"
    # ZMTP 1.0 and 2.0 (ZeroMQ before 4.0) have no security mechanism: such a server speaks no CURVE.
    assert parse_mechanism(greeting(b"", major=1)[:12]) == "NULL"
    with pytest.raises(ValueError, match="closed the connection after 40 of the greeting's 64 bytes"):
        parse_mechanism(greeting(b"CURVE")[:40])
    with pytest.raises(ValueError, match="closed the connection after 5 of"):
        parse_mechanism(PROBE[:5])
    with pytest.raises(ValueError, match="not a ZeroMQ greeting"):
        parse_mechanism(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ValueError, match="not a ZeroMQ greeting"):
        parse_mechanism(PROBE[:9] + b"\x00" + bytes(54))  # the signature's last byte must be odd
    with pytest.raises(ValueError, match="names no mechanism"):
        parse_mechanism(greeting(b""))
    with pytest.raises(ValueError, match="names no mechanism"):
        parse_mechanism(greeting(b"CUR\x01VE"))
