"""Sentences per second one Triton replica serves, for capacity planning (docs/SCALING.md).

Starts one bridge with its embedded tritonserver (one replica of the packaged model, default flags plus any given
after ``--``), runs bert-serving-benchmark's points against it, and writes the points together with what the machine
was (CPU model, cores, load average before and after: a shared machine makes the figure a floor, not a ceiling).

    .venv/bin/python -m bert_bench.replica_capacity -output bench/results/replica-capacity [-- -num_worker 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from .client_load import run_load
from .server_process import start_server

SENTENCE = "benchmark sentence {} with a handful of ordinary words"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="replica_capacity", description=__doc__.splitlines()[0])
    parser.add_argument("-output", type=Path, default=Path("bench/results/replica-capacity"))
    parser.add_argument("-client_batch_size", type=int, nargs="+", default=[16, 256])
    parser.add_argument("-num_client", type=int, nargs="+", default=[1, 4])
    parser.add_argument("-num_repeat", type=int, default=5)
    parser.add_argument("bridge_flags", nargs="*", help="after --: extra bert-serving-start flags")
    args = parser.parse_args(argv)

    before = machine()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(list(args.bridge_flags), Path(folder) / "bridge.log", ready_timeout_s=600)
        try:
            points = []
            for batch_size in args.client_batch_size:
                sentences = [SENTENCE.format(i) for i in range(batch_size)]
                for num_client in args.num_client:
                    load = run_load(server.port, server.port_out, sentences, num_client=num_client,
                                    repeats=args.num_repeat)
                    points.append({"client_batch_size": batch_size, "num_client": num_client,
                                   "sentences_per_s": load.sentences_per_s,
                                   "p50_latency_ms": load.percentile_ms(50), "errors": load.errors})
                    print(f"batch {batch_size:>5} x {num_client:>2} clients: {load.sentences_per_s:8.1f} "
                          "sentences/s", flush=True)
        finally:
            server.stop()
    result = {"what": "one Triton replica (embedded tritonserver, packaged all-MiniLM-L6-v2, bridge defaults)",
              "bridge_flags": args.bridge_flags, "machine_before": before, "machine_after": machine(),
              "points": points, "best_sentences_per_s": max(p["sentences_per_s"] for p in points)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
