"""HTTP against ZeroMQ on one running bridge: N concurrent clients each sending B-sentence requests, in one run.

``python -m bert_bench.http_load -port 5555 -port_out 5556 -http_port 8125`` (the bridge started with
``-http_port 8125 -http_max_connect 64`` or more). The fronts take turns, ``-rounds`` times each (ZeroMQ first), so
load from other processes on the machine falls on both; every client sends one untimed warm-up request, then
``-num_repeat`` timed ones. HTTP clients are ``HTTPBertClient`` (POST /encode, JSON), ZeroMQ clients ``BertClient``.
Writes OUTPUT.json and OUTPUT.md with sentences/s per front and the ratio HTTP / ZeroMQ (docs/HTTP.md).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Callable


def _zmq_client(args) -> Callable:
    from bert_serving.client import BertClient

    return BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout_ms,
                      check_length=False)


def _http_client(args) -> Callable:
    from bert_serving.client import HTTPBertClient

    return HTTPBertClient(ip=args.ip, port=args.http_port, timeout=args.timeout_ms, api_key=args.api_key)


CLIENTS = {"zmq": _zmq_client, "http": _http_client}


def run_front(args, front: str) -> dict:
    """``num_client`` threads, one client each, ``num_repeat`` timed requests of ``batch_size`` sentences."""
    sentences = [f"benchmark sentence {i} with a handful of ordinary words" for i in range(args.batch_size)]
    latencies: list = []
    errors: list = []
    barrier = threading.Barrier(args.num_client + 1)

    def client_run() -> None:
        try:
            with CLIENTS[front](args) as client:
                client.encode(sentences)  # warm-up: connections, the first reply
                barrier.wait()
                for _ in range(args.num_repeat):
                    start = time.perf_counter()
                    rows = client.encode(sentences)
                    latencies.append(time.perf_counter() - start)
                    if len(rows) != len(sentences):
                        raise AssertionError(f"{len(rows)} vectors for {len(sentences)} sentences")
        except Exception as e:  # reported in the results
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=client_run) for _ in range(args.num_client)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "front": front,
        "requests": len(latencies),
        "seconds": elapsed,
        "sentences_per_s": len(latencies) * args.batch_size / elapsed if latencies else 0.0,
        "p50_latency_ms": 1000 * statistics.median(ordered) if ordered else None,
        "p95_latency_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else None,
        "errors": errors[:5],
        "num_errors": len(errors),
    }


def compare(args) -> dict:
    runs = []
    for round_number in range(args.rounds):
        for front in ("zmq", "http"):
            run = {"round": round_number + 1, **run_front(args, front)}
            runs.append(run)
            print(f"round {run['round']} {front:>4}: {run['sentences_per_s']:8.1f} sentences/s, p50 "
                  f"{run['p50_latency_ms'] or float('nan'):7.1f} ms, p95 {run['p95_latency_ms'] or float('nan'):7.1f}"
                  f" ms" + (f"  ERRORS ({run['num_errors']}): {run['errors'][:1]}" if run["errors"] else ""),
                  flush=True)
    totals = {}
    for front in ("zmq", "http"):
        mine = [r for r in runs if r["front"] == front]
        seconds = sum(r["seconds"] for r in mine)
        totals[front] = sum(r["requests"] for r in mine) * args.batch_size / seconds if seconds else 0.0
    return {
        "num_client": args.num_client,
        "batch_size": args.batch_size,
        "num_repeat": args.num_repeat,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "runs": runs,
        "sentences_per_s": totals,
        "ratio_http_to_zmq": totals["http"] / totals["zmq"] if totals["zmq"] else None,
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
    parser.add_argument("-num_repeat", type=int, default=4, help="timed requests per client and round")
    parser.add_argument("-rounds", type=int, default=2, help="turns per front, alternating")
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
