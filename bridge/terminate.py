"""``bert-serving-terminate``: ask a running bert-serving-start to shut down, and confirm that it did.

The original's flags (its ``get_shutdown_parser``): ``-ip``, ``-port`` (alias ``-port_in``, ``-port_data``) and
``-timeout`` in milliseconds, default 5000. The original reported success whether or not anything listened; here the
TERMINATION frames are queued only on a connection whose ZeroMQ handshake completed (``IMMEDIATE``), so when nothing
listens -- or something that is not the server's request port -- the send times out and the command says so. After
sending, it waits (again up to ``-timeout``) until the server has stopped: the server closes its request port last,
after its tritonserver has stopped, and on this machine the command also waits until the server's process and every
process it started are gone (found from ``/proc`` before sending: who listens on the port, and its descendants).
A server obeys TERMINATION only from its own host, or from a client with CURVE keys it allows (docs/SECURITY.md):
``-server_public_key`` and ``-client_certificate`` are those keys, as BertClient takes them.
Exit status: 0 stopped, 1 not reached or still running, 2 bad flags.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket as sockets
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

PROG = "bert-serving-terminate"

__all__ = ["build_parser", "main", "listening_sockets", "server_processes", "shut_down", "wait_until_gone"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Shut down a bert-serving server and wait until it stops.")
    parser.add_argument("-ip", "--ip", default="localhost", help="the server's address (default: localhost)")
    parser.add_argument("-port", "--port", "-port_in", "--port_in", "-port_data", "--port_data", dest="port",
                        type=int, default=5555, help="the server's request port, its -port (default: 5555)")
    parser.add_argument("-timeout", "--timeout", type=int, default=5000,
                        help="milliseconds to wait for the server to take the request, and again for it to stop "
                             "(default: 5000)")
    parser.add_argument("-server_public_key", "--server_public_key", "--server-public-key",
                        help="CURVE: the server's public certificate (NAME.key) or its z85 key; with "
                             "-client_certificate")
    parser.add_argument("-client_certificate", "--client_certificate", "--client-certificate",
                        help="CURVE: this client's secret certificate (NAME.key_secret), allowed by the server")
    return parser


def shut_down(*, ip: str, port: int, timeout_ms: int, server_public_key: Optional[str] = None,
              client_certificate: Optional[str] = None) -> tuple[bool, str]:
    """Send TERMINATION to ``tcp://ip:port``; return whether the server stopped, and one line saying what happened.

    InputValueError (from the client) when the CURVE keys are incomplete or unreadable."""
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    from bert_serving.client.connection import CurveKeys
    from bert_serving.client.protocol import TERMINATION, encode_request

    address = f"tcp://{ip}:{port}"
    curve_keys = CurveKeys.load(server_public_key=server_public_key, client_certificate=client_certificate)
    server = server_processes(ip, port)  # before the server can go: afterwards nothing says who it was
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        if curve_keys is not None:
            curve_keys.apply(socket)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a completed handshake: a send to nobody times out
        socket.setsockopt(zmq.SNDTIMEO, timeout_ms)
        socket.setsockopt(zmq.LINGER, timeout_ms)
        monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        socket.connect(address)
        try:
            socket.send_multipart(encode_request(b"0", TERMINATION, 0))  # [b"0", b"TERMINATION", b"0", b"0"]
        except zmq.Again:
            keys = (", or it does not accept these CURVE keys (-server_public_key must be its public key, and "
                    "-client_certificate's public key must be in its --curve-allowed-clients)" if curve_keys else "")
            return False, (f"no bert-serving server answered at {address} within {timeout_ms} ms: nothing listens "
                           f"there, or it is not a server's request port (-port){keys}")
        # The server closes its request socket when it stops: that is the disconnect seen here.
        deadline = time.monotonic() + timeout_ms / 1000
        if monitor.poll(timeout_ms) and recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
            left = wait_until_gone(server, deadline)
            if not left:
                return True, f"the server at {address} has shut down"
            return False, (f"the server at {address} closed its port, but process(es) {' '.join(map(str, left))} "
                           f"of it were still running after {timeout_ms} ms")
        return False, (f"sent TERMINATION to {address}, but the server was still running after {timeout_ms} ms "
                       "(it answers requests in flight for up to its --drain-timeout-s first; and it obeys only "
                       "its own host or an allowed CURVE client: see its log)")
    finally:
        context.destroy(linger=0)


def server_processes(ip: str, port: int) -> set[int]:
    """The process listening on ``port`` at ``ip``, when that is an address of this machine, and every process below
    it (tritonserver, its python stubs). Empty when the server is elsewhere, or /proc does not tell (another OS,
    another user's process)."""
    try:
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0])
                     for info in sockets.getaddrinfo(ip, port, type=sockets.SOCK_STREAM)}
    except (OSError, ValueError):
        return set()
    if not any(_is_local(address) for address in addresses):
        return set()
    inodes = {inode for bound, inode in listening_sockets(port) if bound.is_unspecified or bound in addresses}
    owners = {pid for pid, inode in _socket_owners() if inode in inodes}
    return owners | {child for owner in owners for child in _descendants(owner)}


def wait_until_gone(pids: set[int], deadline: float) -> list[int]:
    """Wait until none of ``pids`` runs any more (a zombie is gone: it only waits for its parent to read its exit
    status), at most until ``deadline`` (time.monotonic); return those still running."""
    while True:
        left = sorted(pid for pid in pids if _running(pid))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _is_local(address) -> bool:
    if address.is_loopback or address.is_unspecified:
        return True
    family = sockets.AF_INET6 if address.version == 6 else sockets.AF_INET
    with sockets.socket(family, sockets.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))  # only an address of this machine can be bound
        except OSError:
            return False
    return True


def listening_sockets(port: int) -> list[tuple]:
    """(bound address, inode) of the TCP sockets listening on ``port`` on this machine, from /proc/net/tcp and tcp6;
    an IPv4-mapped IPv6 address is given as the IPv4 address it is."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            bound, bound_port = local.split(":")
            if state == "0A" and int(bound_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(bound)  # 32-bit words in host (little-endian) order
                address = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                found.append((getattr(address, "ipv4_mapped", None) or address, inode))  # ::ffff:a.b.c.d is IPv4
    return found


def _socket_owners():
    """(pid, socket inode) for every socket a process we may inspect has open."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # the process ended, or is not ours to inspect
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                yield int(fd_dir.parent.name), target[len("socket:["):-1]


def _stat_fields(pid: int) -> Optional[list[str]]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid
    except (OSError, IndexError):
        return None


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(int(stat.parent.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        build_parser().error(f"-timeout must be a positive number of milliseconds, got {args.timeout}")
    from bert_serving.client.errors import InputValueError

    try:
        stopped, message = shut_down(ip=args.ip, port=args.port, timeout_ms=args.timeout,
                                     server_public_key=args.server_public_key,
                                     client_certificate=args.client_certificate)
    except InputValueError as e:
        build_parser().error(str(e))
    if stopped:
        print(f"{PROG}: {message}")
        sys.exit(0)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
