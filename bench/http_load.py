"""HTTP against ZeroMQ on one running bridge: N concurrent clients each sending B-sentence requests, in one run.

``python -m bert_bench.http_load -port 5555 -port_out 5556 -http_port 8125`` (the bridge started with
``-http_port 8125 -http_max_connect 64`` or more). Each front gets its clients once (one untimed warm-up request
each); then the fronts take turns, ``-rounds`` short rounds each (ZeroMQ first), each client sending ``-num_repeat``
timed requests per round, so that load from other processes falls on both fronts alike. HTTP clients are
``HTTPBertClient`` (POST /encode, JSON), ZeroMQ clients ``BertClient``.
Writes OUTPUT.json and OUTPUT.md with sentences/s per front and the ratio HTTP / ZeroMQ (docs/HTTP.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Optional


def _zmq_client(args):
    from bert_serving.client import BertClient

    return BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout_ms,
                      check_length=False)


def _http_client(args):
    from bert_serving.client import HTTPBertClient

    return HTTPBertClient(ip=args.ip, port=args.http_port, timeout=args.timeout_ms, api_key=args.api_key)


CLIENTS = {"zmq": _zmq_client, "http": _http_client}


class Fleet:
    """``num_client`` clients of one front, connected and warmed up once (one untimed request each), then reused by
    every round, so that rounds can be short and alternate often: load from other processes then falls on both
    fronts alike."""

    def __init__(self, args, front: str):
        self.front = front
        self.sentences = [f"benchmark sentence {i} with a handful of ordinary words" for i in range(args.batch_size)]
        self.clients = [CLIENTS[front](args) for _ in range(args.num_client)]
        self._each(lambda client: client.encode(self.sentences))

    def run_round(self, num_repeat: int) -> dict:
        """Every client sends ``num_repeat`` timed requests; all start together."""
        latencies: list = []

        def timed(client) -> None:
            for _ in range(num_repeat):
                start = time.perf_counter()
                rows = client.encode(self.sentences)
                latencies.append(time.perf_counter() - start)
                if len(rows) != len(self.sentences):
                    raise AssertionError(f"{len(rows)} vectors for {len(self.sentences)} sentences")

        start = time.perf_counter()
        errors = self._each(timed)
        elapsed = time.perf_counter() - start
        ordered = sorted(latencies)
        return {
            "front": self.front,
            "requests": len(latencies),
            "seconds": elapsed,
            "sentences_per_s": len(latencies) * len(self.sentences) / elapsed if latencies else 0.0,
            "p50_latency_ms": 1000 * statistics.median(ordered) if ordered else None,
            "p95_latency_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else None,
            "errors": errors[:5],
            "num_errors": len(errors),
        }

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _each(self, work: Callable) -> list:
        """work(client) in one thread per client, all released at once; the errors, as text."""
        errors: list = []
        barrier = threading.Barrier(len(self.clients))

        def run(client) -> None:
            try:
                barrier.wait()
                work(client)
            except Exception as e:  # reported in the results
                errors.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=run, args=(client,)) for client in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors


def _cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU time of a local process (the bridge), from /proc; None when not asked or not readable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(args) -> dict:
    fleets = {front: Fleet(args, front) for front in ("zmq", "http")}
    runs = []
    try:
        for round_number in range(args.rounds):
            for front, fleet in fleets.items():
                cpu_before = _cpu_seconds(args.bridge_pid)
                run = {"round": round_number + 1, **fleet.run_round(args.num_repeat)}
                cpu_after = _cpu_seconds(args.bridge_pid)
                if cpu_before is not None and cpu_after is not None:
                    run["bridge_cpu_s"] = cpu_after - cpu_before
                runs.append(run)
                print(f"round {run['round']} {front:>4}: {run['sentences_per_s']:8.1f} sentences/s, p50 "
                      f"{run['p50_latency_ms'] or float('nan'):7.1f} ms, p95 "
                      f"{run['p95_latency_ms'] or float('nan'):7.1f} ms"
                      + (f"  ERRORS ({run['num_errors']}): {run['errors'][:1]}" if run["errors"] else ""),
                      flush=True)
    finally:
        for fleet in fleets.values():
            fleet.close()
    totals, bridge_cpu_ms = {}, {}
    for front in ("zmq", "http"):
        mine = [r for r in runs if r["front"] == front]
        seconds = sum(r["seconds"] for r in mine)
        num_sentences = sum(r["requests"] for r in mine) * args.batch_size
        totals[front] = num_sentences / seconds if seconds else 0.0
        if num_sentences and all("bridge_cpu_s" in r for r in mine):
            bridge_cpu_ms[front] = 1000 * sum(r["bridge_cpu_s"] for r in mine) / num_sentences
    return {
        "num_client": args.num_client,
        "batch_size": args.batch_size,
        "num_repeat": args.num_repeat,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "runs": runs,
        "sentences_per_s": totals,
        "ratio_http_to_zmq": totals["http"] / totals["zmq"] if totals["zmq"] else None,
        "bridge_cpu_ms_per_sentence": bridge_cpu_ms or None,
        "errors": sum(r["num_errors"] for r in runs),
    }


def write(result: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"{result['num_client']} concurrent clients, {result['batch_size']} sentences per request, "
            f"{result['num_repeat']} timed requests per client, {result['rounds']} rounds per front "
            f"({result['machine']}).", "",
            "| round | front | sentences/s | p50 ms | p95 ms | errors |", "|---:|---|---:|---:|---:|---:|"]
    rows += [f"| {r['round']} | {r['front']} | {r['sentences_per_s']:.1f} | {r['p50_latency_ms'] or float('nan'):.1f} "
             f"| {r['p95_latency_ms'] or float('nan'):.1f} | {r['num_errors']} |" for r in result["runs"]]
    ratio = result["ratio_http_to_zmq"]
    rows += ["", f"Overall: ZeroMQ {result['sentences_per_s']['zmq']:.1f} sentences/s, HTTP "
                 f"{result['sentences_per_s']['http']:.1f} sentences/s, HTTP / ZeroMQ = "
                 + (f"{ratio:.3f}" if ratio is not None else "n/a") + "."]
    cpu = result["bridge_cpu_ms_per_sentence"]
    if cpu:
        rows += ["", "Bridge process CPU per sentence (tokenization, protocol, serialization; Triton not included): "
                 + ", ".join(f"{front} {ms:.3f} ms" for front, ms in cpu.items()) + "."]
    output.with_suffix(".md").write_text("\n".join(rows) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bert_bench.http_load", description=__doc__.splitlines()[0])
    parser.add_argument("-ip", default="localhost")
    parser.add_argument("-port", type=int, default=5555)
    parser.add_argument("-port_out", type=int, default=5556)
    parser.add_argument("-http_port", type=int, default=8125)
    parser.add_argument("-api_key", default=None, help="the bridge's --api-key, if it has one")
    parser.add_argument("-num_client", type=int, default=64)
    parser.add_argument("-batch_size", type=int, default=32, help="sentences per request")
    parser.add_argument("-num_repeat", type=int, default=1, help="timed requests per client and round")
    parser.add_argument("-rounds", type=int, default=5, help="turns per front, alternating")
    parser.add_argument("-bridge_pid", type=int, default=None,
                        help="also report the bridge process's CPU time per sentence (a bridge on this machine)")
    parser.add_argument("-timeout_ms", type=int, default=600_000)
    parser.add_argument("-output", type=Path, default=Path("bench/results/http_vs_zmq"),
                        help="writes OUTPUT.json and OUTPUT.md")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    result = compare(args)
    write(result, args.output)
    ratio = result["ratio_http_to_zmq"]
    print(f"HTTP / ZeroMQ = {ratio:.3f}" if ratio is not None else "no ZeroMQ throughput measured")
    print(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
