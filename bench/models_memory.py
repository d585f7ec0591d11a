"""What each model served costs in memory: peak RSS of one bridge serving 1, 2, 4 ... models under load.

``python -m bert_bench.models_memory`` starts ``bert-serving-start`` once per count of models (``-counts``), serving
that many models taken in turn from ``-model_dir`` (default: ``make serve``'s two exports), a copy beyond the given
ones under a name of its own (``minilm-2``, ...): Triton loads every name as a model of its own, with its own
onnxruntime session, as it would a different model of the same size. Then every model gets ``-requests`` requests of
``-batch_size`` sentences of mixed lengths (up to the longest each model reads) over ``/v1/embeddings``, all models at
once. RSS is sampled every ``-period_s`` over the bridge and everything below it (service_memory.py): idle once ready,
and the peak under load. Writes OUTPUT.json and OUTPUT.md (docs/PERFORMANCE.md, "Memory per model").
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from .server_process import free_port, start_server
from .service_memory import ServiceMemory

MB = 2 ** 20
WORDS = ("river stone quiet morning bright window garden letter silver music paper yellow table orange winter "
         "station mountain little harbour evening").split()


def sentences(count: int, seed: int) -> list[str]:
    """``count`` sentences of 4 to about 300 words: short ones and some that fill 256 tokens."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice((4, 12, 30, 80, 300)))) for _ in range(count)]


def served_models(model_dirs: list[str], count: int) -> list[tuple[str, str]]:
    """(name, folder) for ``count`` models, cycling through ``model_dirs`` (NAME=PATH or PATH)."""
    given = []
    for item in model_dirs:
        name, equals, path = item.partition("=")
        given.append((name, path) if equals else (Path(item).name, item))
    return [(name if i < len(given) else f"{name}-{i // len(given) + 1}", path)
            for i, (name, path) in ((i, given[i % len(given)]) for i in range(count))]


def load(http_port: int, model: str, requests: int, batch_size: int, errors: list) -> None:
    for i in range(requests):
        body = json.dumps({"model": model, "input": sentences(batch_size, seed=i)}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/embeddings", data=body,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as reply:
                if len(json.loads(reply.read())["data"]) != batch_size:
                    errors.append(f"{model}: a reply with too few vectors")
        except Exception as e:  # reported in the results
            errors.append(f"{model}: {type(e).__name__}: {e}")


def measure(args, count: int) -> dict:
    models = served_models(args.model_dir, count)
    http_port = free_port()
    flags = [flag for name, path in models for flag in ("-model_dir", f"{name}={path}")]
    server = start_server([*flags, "-http_port", str(http_port), "-http_max_connect", str(count)],
                          Path(tempfile.mkdtemp(prefix="models-memory-")) / "bridge.log", ready_timeout_s=600)
    try:
        with ServiceMemory(server.pid, period_s=args.period_s) as memory:
            time.sleep(3 * args.period_s)
            idle = memory.latest()
            errors: list = []
            threads = [threading.Thread(target=load, args=(http_port, name, args.requests, args.batch_size, errors))
                       for name, _ in models]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            load_s = time.monotonic() - started
            time.sleep(args.period_s)
        samples = memory.samples
    finally:
        server.stop()
    peak = max(samples, key=lambda s: s.bridge_bytes + s.triton_bytes)
    return {
        "models": [name for name, _ in models],
        "idle_mb": {"bridge": idle.bridge_bytes / MB, "triton": idle.triton_bytes / MB,
                    "total": (idle.bridge_bytes + idle.triton_bytes) / MB},
        "peak_mb": {"bridge": max(s.bridge_bytes for s in samples) / MB,
                    "triton": max(s.triton_bytes for s in samples) / MB,
                    "total": (peak.bridge_bytes + peak.triton_bytes) / MB},
        "sentences": count * args.requests * args.batch_size,
        "load_s": load_s,
        "errors": errors,
    }


def write(result: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = ["| models | idle MB (bridge + Triton) | peak MB under load (bridge + Triton) | peak per model MB |",
            "|---|---:|---:|---:|"]
    for run in result["runs"]:
        idle, peak = run["idle_mb"], run["peak_mb"]
        rows.append(f"| {len(run['models'])}: {', '.join(run['models'])} | {idle['total']:.0f} "
                    f"({idle['bridge']:.0f} + {idle['triton']:.0f}) | {peak['total']:.0f} ({peak['bridge']:.0f} + "
                    f"{peak['triton']:.0f}) | {peak['total'] / len(run['models']):.0f} |")
    rows += ["", f"{result['requests']} requests of {result['batch_size']} sentences (4 to 300 words) per model, all "
             f"models at once; RSS of the bridge and everything below it (tritonserver, one python backend stub per "
             f"model), every {result['period_s']} s. {result['machine']}."]
    output.with_suffix(".md").write_text("\n".join(rows) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bert_bench.models_memory", description=__doc__.splitlines()[0])
    parser.add_argument("-model_dir", action="append", default=None,
                        help="[NAME=]PATH of an export (repeatable; default: make serve's model_repository/minilm and "
                             "model_repository/all-MiniLM-L6-v2)")
    parser.add_argument("-counts", type=int, nargs="+", default=[2, 4], help="numbers of models to serve, one run each")
    parser.add_argument("-requests", type=int, default=20, help="requests per model")
    parser.add_argument("-batch_size", type=int, default=32, help="sentences per request")
    parser.add_argument("-period_s", type=float, default=0.5, help="RSS sampling period")
    parser.add_argument("-output", type=Path, default=Path("bench/results/models_memory"),
                        help="writes OUTPUT.json and OUTPUT.md")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    args.model_dir = args.model_dir or ["model_repository/minilm", "model_repository/all-MiniLM-L6-v2"]
    result = {"requests": args.requests, "batch_size": args.batch_size, "period_s": args.period_s,
              "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} "
                         "GB of memory",
              "runs": [measure(args, count) for count in args.counts]}
    write(result, args.output)
    for run in result["runs"]:
        print(f"{len(run['models'])} models: peak {run['peak_mb']['total']:.0f} MB, idle {run['idle_mb']['total']:.0f} "
              f"MB, {len(run['errors'])} errors")
    return result


if __name__ == "__main__":
    main()
