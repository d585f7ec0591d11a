"""How the client's (and the bridge's) ZeroMQ sockets connect: TCP keepalive, and CURVE keys with a handshake watch.

Both ends of a connection use ``set_tcp_keepalive``, so a connection idle for days behind NAT or a firewall stays
open, and one that was dropped silently is noticed within minutes instead of hanging a request.

CURVE (docs/SECURITY.md): the server's public key and this client's key pair, as written by ``bert-serving-keys``.
The 1.10 protocol has no error channel for a refused handshake, so ``HandshakeWatch`` reads the sockets' monitor
events, and the server's greeting when a handshake failed (``greeting.py``): a key the server refused, a server key
that is not the server's, or a server without CURVE becomes an error the user can act on instead of a silent wait.
Only pyzmq and the standard library are imported here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from .errors import AuthenticationError, InputValueError
from .greeting import read_mechanism

__all__ = ["CurveKeys", "HandshakeWatch", "set_tcp_keepalive"]

# A NAT gateway or firewall forgets an idle TCP connection after a few minutes (AWS NAT: 350 s, Azure: 240 s, many
# home routers: 300 s); a probe after 60 idle seconds keeps the mapping alive on all of them. A peer that vanished
# without closing (a crashed host, a pulled cable) fails IDLE + COUNT * INTERVAL = 60 + 6 * 10 s: within two minutes.
TCP_KEEPALIVE_IDLE_S = 60
TCP_KEEPALIVE_INTERVAL_S = 10
TCP_KEEPALIVE_COUNT = 6

# A handshake that fails this many times in a row, never succeeding, is a key problem, not a network hiccup.
FAILED_HANDSHAKES_BEFORE_GIVING_UP = 3
# A server's greeting takes a round trip; this bounds the wait for one on a loaded host, on failures only.
GREETING_TIMEOUT_S = 5.0

PathOrKey = Union[str, bytes, "os.PathLike[str]"]


def set_tcp_keepalive(socket: zmq.Socket) -> None:
    """Turn on TCP keepalive for every connection of ``socket`` (set before bind or connect)."""
    socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
    socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_IDLE_S)
    socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, TCP_KEEPALIVE_INTERVAL_S)
    socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, TCP_KEEPALIVE_COUNT)


@dataclass(frozen=True)
class CurveKeys:
    """A client's CURVE keys (z85): the server's public key, and this client's own public and secret key."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, *, server_public_key: Optional[PathOrKey],
             client_certificate: Optional[PathOrKey]) -> Optional["CurveKeys"]:
        """None when neither is given (no CURVE); InputValueError naming the argument when one is missing or bad.

        ``server_public_key``: the server's public certificate file (``NAME.key``) or its 40-character z85 key.
        ``client_certificate``: this client's secret certificate file (``NAME.key_secret``), which holds both keys.
        """
        if server_public_key is None and client_certificate is None:
            return None
        if server_public_key is None or client_certificate is None:
            given, missing = (("server_public_key", "client_certificate") if client_certificate is None
                              else ("client_certificate", "server_public_key"))
            raise InputValueError(f"CURVE needs both server_public_key and client_certificate: {given} was given, "
                                  f"{missing} was not (bert-serving-keys writes them; see docs/SECURITY.md)")
        if _looks_like_z85_key(server_public_key):
            server_public = server_public_key.encode("ascii") if isinstance(server_public_key, str) \
                else bytes(server_public_key)
        else:
            server_public, _ = _read_certificate(server_public_key, "server_public_key")
        public, secret = _read_certificate(client_certificate, "client_certificate")
        if secret is None:
            raise InputValueError(f"client_certificate {os.fspath(client_certificate)!r} holds no secret key: give "
                                  "the NAME.key_secret file bert-serving-keys wrote, not the public NAME.key")
        return cls(server_public, public, secret)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE client of the server (before connect)."""
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def _looks_like_z85_key(value: PathOrKey) -> bool:
    if not isinstance(value, (str, bytes)) or len(value) != 40:
        return False
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if os.path.exists(raw):
        return False
    try:
        return len(z85.decode(raw)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def _read_certificate(path: PathOrKey, argument: str) -> tuple[bytes, Optional[bytes]]:
    """(public, secret or None) of a certificate file; InputValueError saying which argument is wrong and why."""
    path = os.fsdecode(path)
    if not os.path.isfile(path):
        raise InputValueError(f"{argument} {path!r}: no such file (expected a certificate written by "
                              "bert-serving-keys, or for server_public_key its 40-character z85 key)")
    try:
        public, secret = zmq.auth.load_certificate(path)
        if public is None or len(z85.decode(public)) != 32 or (secret is not None and len(z85.decode(secret)) != 32):
            raise ValueError("no valid public-key line")
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise InputValueError(f"{argument} {path!r} is not a CURVE certificate written by bert-serving-keys "
                              f"({e})") from e
    return public, secret


class HandshakeWatch:
    """Watches the CURVE handshakes of the client's sockets: ``check()`` raises AuthenticationError once it is clear
    that the keys do not fit, and ``diagnosis()`` says what was seen, for a timeout's message.

    What a failed handshake means is read from the server, not from the event: libzmq reports a server without CURVE
    as a protocol failure or as a failure with no detail, depending on timing, and a wrong server key as the latter.
    So on each failure the watch reads the server's greeting (``greeting.read_mechanism``) until it knows whether
    that port speaks CURVE; a mechanism-mismatch event says "no" as surely. The messages name the server by ``ip:port``
    whichever socket failed first, so the user reads the same sentence every time.
    """

    EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)

    def __init__(self, host: str, connections: Sequence[tuple[zmq.Socket, int]]):
        """``connections``: each socket with the server port it connects to; the first port names the server."""
        self.address = f"{host}:{connections[0][1]}"
        self._host = host
        self._connections = list(connections)
        self._monitors = [socket.get_monitor_socket(self.EVENTS) for socket, _ in self._connections]
        # Per connection (its index): handshakes succeeded, failures in a row, whether its server speaks CURVE
        # once its greeting (or a mismatch) told, and why its greeting could not be read while it could not.
        self._succeeded: set[int] = set()
        self._failures = [0] * len(self._connections)
        self._speaks_curve: dict[int, bool] = {}
        self._unreadable: dict[int, str] = {}
        self._refused = False

    @property
    def monitors(self) -> list[zmq.Socket]:
        return list(self._monitors)

    def check(self) -> None:
        """Read the events so far; raise when the server refused our key, does not speak CURVE, or every handshake
        of a socket failed."""
        failed = set()
        for index, monitor in enumerate(self._monitors):
            while monitor.poll(0):
                message = parse_monitor_message(monitor.recv_multipart())
                if message["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._succeeded.add(index)
                    self._failures[index] = 0
                elif message["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    self._refused = True
                else:
                    self._failures[index] += 1
                    failed.add(index)
                    if (message["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            and message["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
                        self._speaks_curve[index] = False
        if self._refused:
            raise AuthenticationError(
                f"the server at {self.address} refused this client's CURVE key: its public key is not in the "
                "server's --curve-allowed-clients folder (copy the client's NAME.key there and restart the server)")
        for index in sorted(failed - self._speaks_curve.keys()):
            self._read_greeting(index)
        if any(speaks is False for speaks in self._speaks_curve.values()):
            raise AuthenticationError(
                f"the server at {self.address} does not speak CURVE: it runs without --curve-certificate; connect "
                "without server_public_key and client_certificate")
        hopeless = [index for index, count in enumerate(self._failures)
                    if count >= FAILED_HANDSHAKES_BEFORE_GIVING_UP and index not in self._succeeded]
        if not hopeless:
            return
        gave_up = f"the CURVE handshake with {self.address} failed {FAILED_HANDSHAKES_BEFORE_GIVING_UP} times"
        unreadable = [self._unreadable[index] for index in hopeless if index in self._unreadable]
        if unreadable:
            raise AuthenticationError(
                f"{gave_up}: either the server runs without --curve-certificate or server_public_key is not its public "
                f"key (its greeting, which would tell, could not be read: {unreadable[0]})")
        raise AuthenticationError(f"{gave_up}: server_public_key is not this server's public key")

    def _read_greeting(self, index: int) -> None:
        port = self._connections[index][1]
        try:
            self._speaks_curve[index] = read_mechanism(self._host, port, timeout_s=GREETING_TIMEOUT_S) == "CURVE"
            self._unreadable.pop(index, None)
        except (OSError, ValueError) as e:
            self._unreadable[index] = str(e)

    def diagnosis(self) -> str:
        """A sentence for a timeout's message."""
        try:
            self.check()
        except AuthenticationError as e:
            return str(e)
        if len(self._succeeded) == len(self._monitors):
            return "the CURVE handshakes with the server succeeded, so the keys fit"
        return ("no CURVE handshake has completed yet: is the server up, and is server_public_key its key? (a server "
                "cannot answer a handshake made with the wrong key)")

    def close(self) -> None:
        for (socket, _), monitor in zip(self._connections, self._monitors):
            socket.disable_monitor()
            monitor.close(0)
