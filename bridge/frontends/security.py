"""Access control of the ZeroMQ front end: CURVE keys, the ZAP handler that admits allowed clients, and who may
send TERMINATION. docs/SECURITY.md explains the threat model and the choices.

- With ``--curve-certificate`` (the server's secret certificate) both sockets are CURVE servers, and
  ``--curve-allowed-clients`` is required: a folder of the public certificates of the clients let in. There is no
  "encrypt but admit anyone" mode: whoever knows the server's public key (it is public) could use the service.
- The ZAP handler is bound before the TCP ports, so no connection is ever admitted unchecked; the sockets also set
  ZAP_ENFORCE_DOMAIN, so a missing handler refuses everyone instead of admitting everyone. It answers in the bridge's
  event loop; until that loop runs (model export, Triton start-up), handshakes wait rather than pass.
- TERMINATION is obeyed only from a loopback address or from a CURVE-authenticated client (with CURVE on, every
  connected client is one: the allowed folder is the operator's list of trusted clients).
"""
from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils import z85

from ..errors import StartupError

log = logging.getLogger("bert_bridge.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_DOMAIN = b"bert-serving"
REFUSAL_LOG_INTERVAL_S = 10.0  # a client retrying with a refused key must not fill the log


@dataclass(frozen=True)
class CurveServerKeys:
    """The server's key pair and the public keys (raw 32 bytes) of the clients it admits, with their names."""

    public: bytes
    secret: bytes
    allowed: dict  # raw public key -> certificate name (file stem), the User-Id of the client's messages
    allowed_folder: Path

    @classmethod
    def load(cls, certificate: Path, allowed_folder: Path) -> "CurveServerKeys":
        """StartupError, one line, for a missing, unreadable or invalid file or folder."""
        public, secret = _load_certificate(certificate, "--curve-certificate")
        if secret is None:
            raise StartupError(f"--curve-certificate {certificate} holds no secret key: give the server's "
                               "NAME.key_secret written by bert-serving-keys, not its public NAME.key")
        if not allowed_folder.is_dir():
            raise StartupError(f"--curve-allowed-clients {allowed_folder}: not a folder (it holds the public "
                               "certificates, NAME.key, of the clients let in)")
        allowed = {}
        for path in sorted(allowed_folder.glob("*.key")):
            client_public, _ = _load_certificate(path, "--curve-allowed-clients")
            allowed[z85.decode(client_public)] = path.stem
        if not allowed:
            raise StartupError(f"--curve-allowed-clients {allowed_folder} holds no public certificate (NAME.key): "
                               "no client could connect; make one with bert-serving-keys and copy its .key there")
        return cls(public, secret, allowed, allowed_folder)

    def make_server(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server that admits only what the ZAP handler admits (before bind)."""
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def _load_certificate(path: Path, flag: str) -> tuple[bytes, Optional[bytes]]:
    if not path.is_file():
        raise StartupError(f"{flag} {path}: no such file (bert-serving-keys writes certificates; see docs/SECURITY.md)")
    try:
        public, secret = zmq.auth.load_certificate(path)
        if public is None or len(z85.decode(public)) != 32 or (secret is not None and len(z85.decode(secret)) != 32):
            raise ValueError("no valid public-key line")
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise StartupError(f"{flag} {path} is not a CURVE certificate written by bert-serving-keys ({e})") from e
    return public, secret


class ZapHandler:
    """Answers libzmq's authentication requests (ZAP, RFC 27) for every CURVE handshake on the context's sockets."""

    def __init__(self, context: zmq.asyncio.Context, keys: CurveServerKeys):
        self.keys = keys
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self._last_refusal_logged = float("-inf")
        self._refusals_not_logged = 0

    async def serve(self) -> None:
        while True:
            request = await self.socket.recv_multipart()
            await self.socket.send_multipart(self.answer(request))

    def answer(self, request: list) -> list:
        """The ZAP reply: 200 with the certificate's name as User-Id for an allowed key, 400 otherwise (500 for a
        request that is not ZAP at all: the REP socket must answer every request, or every handshake would stall)."""
        if len(request) < 6:
            log.error("a malformed ZAP request (%d frames) refused", len(request))
            return [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism, *credentials = request
        client_key = credentials[0] if mechanism == b"CURVE" and credentials else b""
        name = self.keys.allowed.get(client_key)
        if name is not None:
            log.debug("admitted CURVE client %r from %s", name, address.decode(errors="replace"))
            return [version, request_id, b"200", b"OK", name.encode(), b""]
        self._log_refusal(address.decode(errors="replace"), z85.encode(client_key).decode() if client_key else "")
        return [version, request_id, b"400", b"key not allowed", b"", b""]

    def _log_refusal(self, address: str, key: str) -> None:
        now = time.monotonic()
        if now - self._last_refusal_logged < REFUSAL_LOG_INTERVAL_S:
            self._refusals_not_logged += 1
            return
        also = f" (and {self._refusals_not_logged} more refusals)" if self._refusals_not_logged else ""
        log.warning("refused a CURVE client from %s: its public key %s is not in --curve-allowed-clients %s%s",
                    address, key or "(none)", self.keys.allowed_folder, also)
        self._last_refusal_logged, self._refusals_not_logged = now, 0

    def close(self) -> None:
        self.socket.close(0)


@dataclass(frozen=True)
class Sender:
    """Who sent a message, as libzmq reports it on the message: the peer's IP, and the ZAP User-Id under CURVE."""

    address: str
    user_id: Optional[str]

    @classmethod
    def of(cls, frame: zmq.Frame) -> "Sender":
        return cls(_frame_property(frame, "Peer-Address") or "unknown", _frame_property(frame, "User-Id") or None)

    @property
    def is_local(self) -> bool:
        try:
            address = ipaddress.ip_address(self.address)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    def may_terminate(self) -> bool:
        return self.is_local or self.user_id is not None

    def __str__(self) -> str:
        return f"{self.address} (CURVE client {self.user_id!r})" if self.user_id else self.address


def _frame_property(frame: zmq.Frame, name: str) -> str:
    try:
        return frame.get(name)
    except zmq.ZMQError:  # libzmq does not know it for this connection (no ZAP: no User-Id)
        return ""
