"""Access control against real bridges (docs/SECURITY.md): CURVE keys, who may send TERMINATION, TCP keepalive.

Two bridges: one with CURVE (this module's, stopped by its last test through bert-serving-terminate with keys), and
the session's plain ``default_bridge``. A client that lacks the right keys must get nothing and must not disturb a
good client's concurrent requests.
"""
from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from bert_serving.client import AuthenticationError, BertClient, BertTimeoutError, InputValueError
from bert_serving.client import protocol
from bert_serving.client.connection import TCP_KEEPALIVE_COUNT, TCP_KEEPALIVE_IDLE_S, TCP_KEEPALIVE_INTERVAL_S
from harness import REPO_ROOT, free_port

SENTENCES = ["the quick brown fox", "jumps over the lazy dog", "CURVE keeps strangers out"]
REFUSAL_WAIT_MS = 3000  # how long a refused client waits for anything before the test calls it "nothing"


def assert_documented(message: str, port: int) -> None:
    """docs/SECURITY.md quotes what a client with the wrong keys is told, with HOST:PORT for the server's address."""
    quoted = f'"{message.replace(f"localhost:{port}", "HOST:PORT")}"'
    assert quoted in (REPO_ROOT / "docs" / "SECURITY.md").read_text(), quoted


def make_keys(folder, name: str) -> tuple:
    result = subprocess.run([sys.executable, "-m", "bert_serving.client.keys", name, "-output", str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return folder / f"{name}.key", folder / f"{name}.key_secret"


def non_loopback_ipv4() -> str:
    """An address of this machine that is not 127.x, so a connection to it arrives from a non-loopback address."""
    candidates = []
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    try:
        candidates += subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    for address in candidates:
        if address.count(".") == 3 and not address.startswith("127."):
            return address
    pytest.skip(f"this machine has no non-loopback IPv4 address (saw {candidates}): cannot send from one")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    allowed, elsewhere = root / "allowed", root / "elsewhere"
    server = make_keys(root / "server", "server")
    alice = make_keys(elsewhere, "alice")
    mallory = make_keys(elsewhere, "mallory")  # a valid key pair the server was never told about
    allowed.mkdir()
    (allowed / "alice.key").write_bytes(alice[0].read_bytes())
    return {"server": server, "alice": alice, "mallory": mallory, "allowed": allowed, "stranger": make_keys(
        elsewhere, "stranger")}


@pytest.fixture(scope="module")
def curve_bridge(start_bridge, keys):
    with start_bridge("--curve-certificate", str(keys["server"][1]), "--curve-allowed-clients",
                      str(keys["allowed"])) as bridge:
        yield bridge


def alice_client(bridge, keys, **kwargs) -> BertClient:
    return BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60_000, server_public_key=keys["server"][0],
                      client_certificate=keys["alice"][1], **kwargs)


def test_the_keys_command_writes_a_private_secret_and_never_overwrites(keys, tmp_path):
    public, secret = keys["server"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert "secret-key" in secret.read_text() and "secret-key" not in public.read_text()
    before = secret.read_bytes()
    again = subprocess.run([sys.executable, "-m", "bert_serving.client.keys", "server", "-output",
                            str(secret.parent)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    assert secret.read_bytes() == before


def test_an_allowed_client_gets_the_vectors_of_a_plain_bridge(curve_bridge, default_bridge, keys):
    with BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60_000) as plain:
        expected = plain.encode(SENTENCES)
    with alice_client(curve_bridge, keys) as bc:
        np.testing.assert_array_equal(bc.encode(SENTENCES), expected)
    # The server's public key also works as its z85 string.
    z85_key = keys["server"][0].read_text().split('public-key = "')[1].split('"')[0]
    with BertClient(port=curve_bridge.port, port_out=curve_bridge.port_out, timeout=60_000,
                    server_public_key=z85_key, client_certificate=keys["alice"][1]) as bc:
        np.testing.assert_array_equal(bc.encode(SENTENCES), expected)


def test_clients_without_the_right_keys_get_nothing_and_do_not_disturb_others(curve_bridge, keys, legacy_client):
    with alice_client(curve_bridge, keys) as bc:
        expected = bc.encode(SENTENCES)
    good_results, good_errors, refused_done = [], [], threading.Event()

    def good_client() -> None:  # keeps encoding until every refused client was tried, and a bit beyond
        try:
            with alice_client(curve_bridge, keys) as bc:
                while not refused_done.is_set() or len(good_results) < 3:
                    good_results.append(bc.encode(SENTENCES))
        except Exception as e:  # handed to the test
            good_errors.append(e)

    worker = threading.Thread(target=good_client)
    worker.start()
    try:
        ports = {"port": curve_bridge.port, "port_out": curve_bridge.port_out, "timeout": REFUSAL_WAIT_MS}
        # No keys at all: the handshake cannot even start, so nothing comes back -- a timeout.
        with pytest.raises(BertTimeoutError):
            BertClient(**ports)
        # The unmodified 1.10 client cannot do CURVE (docs/SECURITY.md): its request is never read.
        legacy = legacy_client.BertClient(**ports, ignore_all_checks=True)
        try:
            with pytest.raises(TimeoutError):
                legacy.encode(SENTENCES)
        finally:  # its sockets linger forever on an unsent request: close() would never return
            for stuck in (legacy.sender, legacy.receiver):
                stuck.setsockopt(zmq.LINGER, 0)
            legacy.close()
        # A valid key pair the server does not allow: refused at the handshake, told at once.
        with pytest.raises(AuthenticationError) as not_allowed:
            BertClient(**ports, server_public_key=keys["server"][0], client_certificate=keys["mallory"][1])
        assert str(not_allowed.value) == (
            f"the server at localhost:{curve_bridge.port} refused this client's CURVE key: its public key is not in "
            "the server's --curve-allowed-clients folder (copy the client's NAME.key there and restart the server)")
        assert_documented(str(not_allowed.value), curve_bridge.port)
        # The right key pair but another server's key: the server cannot read the handshake, and its greeting
        # says it speaks CURVE, so the key is what is wrong.
        with pytest.raises(AuthenticationError) as wrong_key:
            BertClient(**ports, server_public_key=keys["stranger"][0], client_certificate=keys["alice"][1])
        assert str(wrong_key.value) == (f"the CURVE handshake with localhost:{curve_bridge.port} failed 3 times: "
                                        "server_public_key is not this server's public key")
        assert_documented(str(wrong_key.value), curve_bridge.port)
        # Without the constructor's checks, the refused client's requests are never answered either.
        with BertClient(**ports, ignore_all_checks=True, server_public_key=keys["server"][0],
                        client_certificate=keys["mallory"][1]) as refused:
            with pytest.raises((AuthenticationError, BertTimeoutError)):
                refused.encode(SENTENCES)
    finally:
        refused_done.set()
        worker.join(120)
    assert not good_errors, good_errors
    assert len(good_results) >= 3
    for result in good_results:
        np.testing.assert_array_equal(result, expected)
    assert "refused a CURVE client" in curve_bridge.log()
    assert curve_bridge.process.poll() is None


def test_incomplete_or_wrong_client_keys_are_refused_before_connecting(keys):
    with pytest.raises(InputValueError, match="client_certificate was not"):
        BertClient(server_public_key=keys["server"][0])
    with pytest.raises(InputValueError, match="holds no secret key"):
        BertClient(server_public_key=keys["server"][0], client_certificate=keys["alice"][0])
    with pytest.raises(InputValueError, match="no such file"):
        BertClient(server_public_key=keys["server"][0].with_name("missing.key"), client_certificate=keys["alice"][1])


def test_curve_keys_against_a_server_without_curve_fail_clearly(default_bridge, keys):
    # libzmq reports this as a mechanism mismatch or, when the server closed first, with no detail; the client reads
    # the server's greeting, so the user reads this sentence either way (tests/client/test_client_handshakes.py).
    with pytest.raises(AuthenticationError) as raised:
        alice_client(default_bridge, keys)
    assert str(raised.value) == (
        f"the server at localhost:{default_bridge.port} does not speak CURVE: it runs without --curve-certificate; "
        "connect without server_public_key and client_certificate")
    assert_documented(str(raised.value), default_bridge.port)


@pytest.mark.parametrize("address, user_id, allowed", [
    ("127.0.0.1", None, True), ("127.8.9.10", None, True), ("::1", None, True), ("::ffff:127.0.0.1", None, True),
    ("192.0.2.7", None, False), ("::ffff:192.0.2.7", None, False), ("unknown", None, False),
    ("192.0.2.7", "alice", True)])
def test_termination_needs_a_loopback_address_or_a_curve_user(address, user_id, allowed):
    from bert_bridge.frontends.security import Sender

    assert Sender(address, user_id).may_terminate() is allowed


def start_fails_in_one_line(*flags: str) -> str:
    command = [sys.executable, "-m", "bert_bridge.cli", "-port", str(free_port()), "-port_out", str(free_port()),
               *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_missing_or_invalid_server_keys_stop_the_start_in_one_line(keys, tmp_path):
    missing = tmp_path / "missing.key_secret"
    error = start_fails_in_one_line("--curve-certificate", str(missing), "--curve-allowed-clients",
                                    str(keys["allowed"]))
    assert len(error.strip().splitlines()) == 1 and f"--curve-certificate {missing}: no such file" in error
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("not a certificate\n")
    error = start_fails_in_one_line("--curve-certificate", str(garbage), "--curve-allowed-clients",
                                    str(keys["allowed"]))
    assert len(error.strip().splitlines()) == 1 and "is not a CURVE certificate" in error
    # CURVE without an allowed list would admit anyone who knows the (public) server key: refused.
    error = start_fails_in_one_line("--curve-certificate", str(keys["server"][1]))
    assert "--curve-certificate and --curve-allowed-clients go together" in error


def test_termination_from_another_host_is_refused_and_the_server_keeps_serving(default_bridge):
    address = non_loopback_ipv4()
    context = zmq.Context()
    try:
        push, sub = context.socket(zmq.PUSH), context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"intruder")
        sub.connect(f"tcp://{address}:{default_bridge.port_out}")
        push.connect(f"tcp://{address}:{default_bridge.port}")
        push.send_multipart(protocol.encode_request(b"intruder", protocol.TERMINATION, 7))
        assert sub.poll(30_000), "no reply to a refused TERMINATION"
        reply = protocol.decode_reply(sub.recv_multipart())
        assert (reply.request_id, reply.error_type) == (7, "Unauthorized")
        assert "only from the server's own host" in reply.error and address in reply.error
    finally:
        context.destroy(linger=0)
    # The command line says the server is still running.
    result = subprocess.run([sys.executable, "-m", "bert_bridge.terminate", "-ip", address, "-port",
                             str(default_bridge.port), "-timeout", "1000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "still running" in result.stderr, result.stderr
    assert default_bridge.process.poll() is None
    assert f"refused TERMINATION from {address}" in default_bridge.log()
    with BertClient(ip=address, port=default_bridge.port, port_out=default_bridge.port_out, timeout=60_000) as bc:
        assert bc.encode(SENTENCES).shape[0] == len(SENTENCES)


def established_connections_with_keepalive(port: int) -> list[str]:
    """The bridge's side of the TCP connections to ``port``, as `ss` shows them, with their timers."""
    output = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                            text=True, timeout=10).stdout
    return [line for line in output.splitlines() if line.strip()]


def test_keepalive_is_on_for_bridge_and_client_and_an_idle_client_still_works(default_bridge):
    # The bound sockets of a bridge, as ZmqSockets.bind makes them.
    from bert_bridge.frontends.zmq_frontend import ZmqSockets

    sockets = ZmqSockets.bind(ip="127.0.0.1", port=free_port(), port_out=free_port())
    try:
        for bound in (sockets.receiver, sockets.sender):
            assert (bound.getsockopt(zmq.TCP_KEEPALIVE), bound.getsockopt(zmq.TCP_KEEPALIVE_IDLE),
                    bound.getsockopt(zmq.TCP_KEEPALIVE_INTVL), bound.getsockopt(zmq.TCP_KEEPALIVE_CNT)) == (
                1, TCP_KEEPALIVE_IDLE_S, TCP_KEEPALIVE_INTERVAL_S, TCP_KEEPALIVE_COUNT)
    finally:
        sockets.close()
    # A dropped peer is noticed within minutes, and a NAT's idle timeout (minutes) is never reached.
    assert TCP_KEEPALIVE_IDLE_S + TCP_KEEPALIVE_COUNT * TCP_KEEPALIVE_INTERVAL_S <= 300
    with BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60_000) as bc:
        for connected in (bc._sender, bc._receiver):
            assert connected.getsockopt(zmq.TCP_KEEPALIVE) == 1
            assert connected.getsockopt(zmq.TCP_KEEPALIVE_IDLE) == TCP_KEEPALIVE_IDLE_S
        first = bc.encode(SENTENCES)
        # The kernel of the running bridge keeps a keepalive timer on both of this client's connections (`ss` is
        # iproute2's; a machine without it checks the options only).
        if shutil.which("ss"):
            for port in (default_bridge.port, default_bridge.port_out):
                assert any("timer:(keepalive" in line for line in established_connections_with_keepalive(port)), port
        # Idle for a few seconds, not days (no test can wait that long; keepalive is what carries it further).
        time.sleep(3)
        np.testing.assert_array_equal(bc.encode(SENTENCES), first)


def test_an_allowed_curve_client_may_terminate_from_another_host(curve_bridge, keys):
    """Last in the module: it stops the CURVE bridge, through bert-serving-terminate with the client's keys."""
    try:
        address = non_loopback_ipv4()
    except pytest.skip.Exception:
        address = "127.0.0.1"
    result = subprocess.run([sys.executable, "-m", "bert_bridge.terminate", "-ip", address, "-port",
                             str(curve_bridge.port), "-timeout", "30000", "-server_public_key", str(keys["server"][0]),
                             "-client_certificate", str(keys["alice"][1])], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert curve_bridge.process.wait(30) == 0
    assert f"received TERMINATION from {address} (CURVE client 'alice')" in curve_bridge.log()
