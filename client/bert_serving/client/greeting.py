"""The ZMTP greeting (ZeroMQ RFC 23 and 37): which security mechanism a ZeroMQ server speaks, read over plain TCP.

libzmq reports a CURVE client meeting a server without CURVE either as a protocol failure or as a handshake failure
with no detail: the server, seeing the client's mechanism, may close the connection before its own greeting went out.
The greeting tells for certain. Its first 64 bytes name the server's mechanism ("NULL", "PLAIN", "CURVE"), and a
server sends them to any peer that sent the first 11 bytes of a greeting (signature and major version), before any
key is looked at. The probe never names a mechanism of its own, so the server has nothing to refuse or to log: it
sees a peer that left during the greeting. Only the standard library is imported here.
"""
from __future__ import annotations

import socket
import time

__all__ = ["GREETING_SIZE", "parse_mechanism", "read_mechanism"]

GREETING_SIZE = 64
SIGNATURE_SIZE = 10
VERSION_OFFSET = 10  # the major version; ZMTP 3 and later carry a mechanism
MECHANISM = slice(12, 32)  # null-padded ASCII
# Signature (0xFF, eight padding bytes, 0x7F; libzmq pads with a ZMTP 1.0 length of 1) and major version 3.
PROBE = b"\xff" + bytes(7) + b"\x01" + b"\x7f" + b"\x03"


def parse_mechanism(greeting: bytes) -> str:
    """The security mechanism named by a server's greeting; ValueError saying why when ``greeting`` is not one."""
    if len(greeting) > 0 and (greeting[0] != 0xFF or (len(greeting) >= SIGNATURE_SIZE and not greeting[9] & 0x01)):
        raise ValueError(f"the server answered {bytes(greeting[:SIGNATURE_SIZE])!r}, which is not a ZeroMQ greeting")
    if len(greeting) <= VERSION_OFFSET:
        raise ValueError(f"the server closed the connection after {len(greeting)} of the greeting's "
                         f"{GREETING_SIZE} bytes")
    if greeting[VERSION_OFFSET] < 3:
        return "NULL"  # ZMTP 1.0 and 2.0 (ZeroMQ before 4.0) have no security mechanisms
    if len(greeting) < GREETING_SIZE:
        raise ValueError(f"the server closed the connection after {len(greeting)} of the greeting's "
                         f"{GREETING_SIZE} bytes")
    name = bytes(greeting[MECHANISM]).rstrip(b"\0")
    if not name or not all(0x21 <= byte < 0x7F for byte in name):
        raise ValueError(f"the server's greeting names no mechanism ({bytes(greeting[MECHANISM])!r})")
    return name.decode("ascii")


def read_mechanism(host: str, port: int, *, timeout_s: float) -> str:
    """Connect to ``host:port`` and return the mechanism its greeting names, within ``timeout_s`` seconds.

    OSError when it cannot connect or the greeting does not come in time; ValueError when what came is not one.
    """
    deadline = time.monotonic() + timeout_s
    greeting = bytearray()
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        try:
            connection.sendall(PROBE)
            while not _complete(greeting):
                connection.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = connection.recv(GREETING_SIZE - len(greeting))
                if not chunk:
                    break
                greeting += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server closed the connection, however abruptly: what came before is what it sent
        except TimeoutError as e:
            raise TimeoutError(f"no complete greeting within {timeout_s:g} s ({len(greeting)} of "
                               f"{GREETING_SIZE} bytes)") from e
    return parse_mechanism(greeting)


def _complete(greeting: bytearray) -> bool:
    if len(greeting) > VERSION_OFFSET and greeting[VERSION_OFFSET] < 3:
        return True  # a ZMTP 1.0 / 2.0 server sends no more before it hears from us
    return len(greeting) >= GREETING_SIZE
