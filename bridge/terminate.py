"""``bert-serving-terminate``: ask a running bert-serving-start to shut down, and confirm that it did.

The original's flags (its ``get_shutdown_parser``): ``-ip``, ``-port`` (alias ``-port_in``, ``-port_data``) and
``-timeout`` in milliseconds, default 5000. The original reported success whether or not anything listened; here the
TERMINATION frames are queued only on a connection whose ZeroMQ handshake completed (``IMMEDIATE``), so when nothing
listens -- or something that is not the server's request port -- the send times out and the command says so. After
sending, it waits (again up to ``-timeout``) until the server closes the connection, i.e. has stopped.
A server obeys TERMINATION only from its own host, or from a client with CURVE keys it allows (docs/SECURITY.md):
``-server_public_key`` and ``-client_certificate`` are those keys, as BertClient takes them.
Exit status: 0 stopped, 1 not reached or still running, 2 bad flags.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

PROG = "bert-serving-terminate"

__all__ = ["build_parser", "main", "shut_down"]


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
        if monitor.poll(timeout_ms) and recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
            return True, f"the server at {address} has shut down"
        return False, (f"sent TERMINATION to {address}, but the server was still running after {timeout_ms} ms "
                       "(it answers requests in flight for up to its --drain-timeout-s first; and it obeys only "
                       "its own host or an allowed CURVE client: see its log)")
    finally:
        context.destroy(linger=0)


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
