"""``bert-serving-benchmark -model modernbert-base`` in its smoke version (bench/long_context.py): the tiny ModernBERT
instead of the base shape, short lengths and three documents; it checks that every part runs and writes what
docs/PERFORMANCE.md's long-context table is built from. The speeds and the peak RSS are the full run's."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_long_context_benchmark_writes_speeds_and_the_long_requests_peak_rss(rotary_folders, tmp_path):
    output = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bert_bench.cli", "-model", "modernbert-base", "-model_dir",
         str(rotary_folders.model("modernbert")), "-long_lengths", "64", "512", "-long_documents", "3",
         "-long_document_tokens", "1500", "-num_repeat", "1", "-output", str(output), "-work_dir",
         str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output / "long_context.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["tokens"], r["sentences"]) for r in rows] == [("64", "256"), ("512", "32"), ("1500", "3")]
    assert all(float(r["sentences_per_s"]) > 0 and not r["errors"] for r in rows)
    assert all(100 < float(r["peak_rss_mb"]) < 4000 for r in rows)  # the whole tree: bridge + triton + stub
    assert "one request of 3 documents of 1500 tokens" in (output / "long_context.md").read_text()
