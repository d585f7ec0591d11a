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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cli import run_point

READY_MARKER = "ready to serve"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    port, port_out = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "bert-serving-start"), "-port", str(port), "-port_out",
               str(port_out), *args.bridge_flags]
    before = machine()
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        bridge = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while READY_MARKER not in Path(log.name).read_text(errors="replace"):
                if bridge.poll() is not None:
                    sys.exit(f"bert-serving-start exited:\n{Path(log.name).read_text(errors='replace')}")
                time.sleep(0.5)
            client_args = argparse.Namespace(ip="localhost", port=port, port_out=port_out, timeout_ms=600_000,
                                             num_repeat=args.num_repeat)
            points = []
            for batch_size in args.client_batch_size:
                for num_client in args.num_client:
                    point = run_point(client_args, batch_size, num_client)
                    points.append(point)
                    print(f"batch {batch_size:>5} x {num_client:>2} clients: {point['sentences_per_s']:8.1f} "
                          "sentences/s", flush=True)
        finally:
            bridge.terminate()
            bridge.wait(60)
    result = {"what": "one Triton replica (embedded tritonserver, packaged all-MiniLM-L6-v2, bridge defaults)",
              "bridge_flags": args.bridge_flags, "machine_before": before, "machine_after": machine(),
              "points": points, "best_sentences_per_s": max(p["sentences_per_s"] for p in points)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
