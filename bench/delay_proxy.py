"""A TCP proxy that delays what the upstream sends, as ``tc netem delay`` on the upstream host's interface would.

This machine's kernel has no netem, so delay lives in user space, in the path between a bridge and a replica:

    python -m bert_bench.delay_proxy -listen 10.231.0.12:8001 -upstream 127.0.0.1:9001 -delay_file /tmp/delay_ms

Every byte the upstream sends is held ``delay_ms`` milliseconds (read from ``-delay_file``, checked every 50 ms; 0,
or no file, forwards at once), in order; what the client sends goes straight through. Connections are never cut by
a change of delay, so a test can turn it on and off under load.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

CHECK_DELAY_EVERY_S = 0.05


class Delay:
    """The current delay in seconds, read from a file the test writes."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds = 0.0

    async def follow(self) -> None:
        while True:
            try:
                self.seconds = max(float(self.path.read_text().strip() or 0), 0.0) / 1000
            except (OSError, ValueError):
                self.seconds = 0.0
            await asyncio.sleep(CHECK_DELAY_EVERY_S)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay | None) -> None:
    """Copy until end of stream; with ``delay``, each piece leaves ``delay.seconds`` after it arrived, in order."""
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait_s = due - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            due = time.monotonic() + (delay.seconds if delay else 0.0)
            await queue.put((due, data or None))
            if not data:
                break
        await delivering
    finally:
        delivering.cancel()
        try:
            writer.close()
        except Exception:  # the other side is already gone
            pass


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay: Delay) -> None:
    async def connected(client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, upstream_writer, None), pump(upstream_reader, client_writer, delay),
                             return_exceptions=True)

    asyncio.create_task(delay.follow())
    server = await asyncio.start_server(connected, *listen)
    print(f"delay proxy on {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]}", flush=True)
    async with server:
        await server.serve_forever()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="delay_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("-listen", type=address, required=True, help="HOST:PORT to accept connections on")
    parser.add_argument("-upstream", type=address, required=True, help="HOST:PORT to forward them to")
    parser.add_argument("-delay_file", type=Path, required=True, help="a file holding the delay in milliseconds")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.upstream, Delay(args.delay_file)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
