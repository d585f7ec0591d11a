"""``bert-serving-benchmark``: the original's client-side sweep against a running server.

For every client batch size x number of concurrent clients, each client encodes ``-num_repeat`` batches; the first
is a warm-up and not timed. Results go to a JSON file and a Markdown table (sentences per second, p50/p95 latency),
so runs can be compared as ratios measured in one run on one machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path


def _client_run(args, batch_size: int, latencies: list, barrier: threading.Barrier, errors: list) -> None:
    from bert_serving.client import BertClient

    sentences = [f"benchmark sentence {i} with a handful of ordinary words" for i in range(batch_size)]
    try:
        with BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout_ms,
                        check_length=False) as bc:
            bc.encode(sentences)  # warm-up
            barrier.wait()
            for _ in range(args.num_repeat):
                start = time.perf_counter()
                bc.encode(sentences)
                latencies.append(time.perf_counter() - start)
    except Exception as e:  # reported in the results, the sweep goes on
        errors.append(f"{type(e).__name__}: {e}")
        barrier.abort()


def run_point(args, batch_size: int, num_client: int) -> dict:
    latencies: list = []
    errors: list = []
    barrier = threading.Barrier(num_client + 1)
    threads = [threading.Thread(target=_client_run, args=(args, batch_size, latencies, barrier, errors))
               for _ in range(num_client)]
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
        "client_batch_size": batch_size,
        "num_client": num_client,
        "sentences_per_s": len(latencies) * batch_size / elapsed if latencies else 0.0,
        "p50_latency_ms": 1000 * statistics.median(ordered) if ordered else None,
        "p95_latency_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else None,
        "errors": errors,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bert-serving-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("-ip", default="localhost")
    parser.add_argument("-port", type=int, default=5555)
    parser.add_argument("-port_out", type=int, default=5556)
    parser.add_argument("-test_client_batch_size", type=int, nargs="+", default=[1, 16, 256, 4096])
    parser.add_argument("-test_num_client", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("-num_repeat", type=int, default=10)
    parser.add_argument("-timeout_ms", type=int, default=600_000)
    parser.add_argument("-output", type=Path, default=Path("bench/results/benchmark"),
                        help="writes OUTPUT.json and OUTPUT.md")
    args = parser.parse_args(argv)

    results = []
    for batch_size in args.test_client_batch_size:
        for num_client in args.test_num_client:
            point = run_point(args, batch_size, num_client)
            results.append(point)
            print(f"batch {batch_size:>5} x {num_client:>3} clients: {point['sentences_per_s']:9.1f} sentences/s, "
                  f"p50 {point['p50_latency_ms'] or float('nan'):8.1f} ms"
                  + (f"  ERRORS: {point['errors'][:1]}" if point["errors"] else ""), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| client batch | clients | sentences/s | p50 ms | p95 ms |", "|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['client_batch_size']} | {r['num_client']} | {r['sentences_per_s']:.1f} | "
             f"{r['p50_latency_ms'] or float('nan'):.1f} | {r['p95_latency_ms'] or float('nan'):.1f} |" for r in results]
    args.output.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
