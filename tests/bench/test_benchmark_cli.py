"""A short version of the benchmark sweep: it runs against a real bridge and writes its tables."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_benchmark_sweep_writes_json_and_markdown(default_bridge, tmp_path):
    output = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "bert_bench.cli", "-port", str(default_bridge.port), "-port_out",
         str(default_bridge.port_out), "-test_client_batch_size", "1", "8", "-test_num_client", "1", "2",
         "-num_repeat", "2", "-output", str(output)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.with_suffix(".json").read_text())
    assert [(r["client_batch_size"], r["num_client"]) for r in rows] == [(1, 1), (1, 2), (8, 1), (8, 2)]
    assert all(r["sentences_per_s"] > 0 and not r["errors"] for r in rows)
    table = output.with_suffix(".md").read_text().splitlines()
    assert table[0].startswith("| client batch") and len(table) == 2 + len(rows)
