"""Triton's own perf_analyzer against the served model, without the bridge: Triton's queue and compute time apart.

The binary comes from the tritonclient 2.51.0 wheel (matching the bundled server), installed by ``make install`` into
.venv/perf-analyzer; the two libraries it needs ship renamed in nvidia_pytriton.libs and are linked under their real
names (../shared/reference/triton-notes.md). Input data are real token ids (JSON), never random ids.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

NEEDED_LIBS = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


def find_binary() -> Path | None:
    binary = Path(sys.prefix) / "perf-analyzer" / "bin" / "perf_analyzer"
    return binary if binary.is_file() else None


def library_folder(work: Path) -> Path:
    """A folder holding NEEDED_LIBS under their real names, linked to the copies in nvidia_pytriton.libs."""
    import pytriton

    libs = Path(pytriton.__file__).resolve().parents[1] / "nvidia_pytriton.libs"
    folder = work / "perf-analyzer-libs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, prefix in NEEDED_LIBS.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(next(libs.glob(f"{prefix}*")))
    return folder


def write_input_data(path: Path, input_ids, input_mask, segment_ids) -> None:
    """One batch-1 entry per sentence, used round-robin by perf_analyzer."""
    data = [{"input_ids": {"content": ids.tolist(), "shape": [len(ids)]},
             "input_mask": {"content": mask.tolist(), "shape": [len(ids)]},
             "segment_ids": {"content": seg.tolist(), "shape": [len(ids)]}}
            for ids, mask, seg in zip(input_ids, input_mask, segment_ids)]
    path.write_text(json.dumps({"data": data}))


def run(binary: Path, *, work: Path, grpc_url: str, model: str, input_data: Path, batch_size: int,
        concurrency: tuple[int, int, int], measurement_ms: int = 3000, timeout_s: float = 300) -> list[dict]:
    """Rows of perf_analyzer's CSV: concurrency, inferences/s, latency percentiles, server queue/compute (us).

    ``concurrency`` is (start, end, step). Stability is all but switched off (-s 1000, i.e. windows within 10x of
    each other): on a shared 2-core machine even 100% was missed now and then (an occasional 0.5 s stall moves the
    latency that much), and perf_analyzer then reports nothing at all. The figures are averages over the windows."""
    results = work / f"perf-{model}-{batch_size}.csv"
    command = [str(binary), "-m", model, "-u", grpc_url, "-i", "grpc", "-b", str(batch_size),
               "--input-data", str(input_data), "--concurrency-range", ":".join(map(str, concurrency)),
               "-p", str(measurement_ms), "-r", "5", "-s", "1000", "-f", str(results)]
    env = {**os.environ, "LD_LIBRARY_PATH": f"{library_folder(work)}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    with open(results) as f:
        return [_row(r) for r in csv.DictReader(f)]


def _row(record: dict) -> dict:
    number = lambda key: float(record.get(key) or 0)  # noqa: E731
    return {"concurrency": int(number("Concurrency")), "inferences_per_s": number("Inferences/Second"),
            "p50_us": number("p50 latency"), "p99_us": number("p99 latency"),
            "server_queue_us": number("Server Queue"), "server_compute_us": number("Server Compute Infer"),
            "client_send_us": number("Client Send"), "client_recv_us": number("Client Recv")}
