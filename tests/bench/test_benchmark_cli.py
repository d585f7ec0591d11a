"""The benchmark's smoke version: one real bridge + Triton, perf_analyzer and the in-process baselines, tiny loads.

It checks that every part runs and writes what docs/PERFORMANCE.md is built from; the speed targets themselves are
measured by the full run (docs/PERFORMANCE.md), never asserted here. The common request is 64 sentences, not the full
run's 256: still three of the bridge's chunks per request (25 + 25 + 14 sentences of 40 tokens), so every path the
full run takes (chunking, Triton's merged batches, model.py's calls, reassembly in order) is taken, and every table,
comparison, plot and perf_analyzer row it asserts on is still written -- for about a quarter of the client-side work.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_smoke_benchmark_writes_tables_ratios_and_plots(tmp_path):
    output = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bert_bench.cli", "-test_max_seq_len", "40", "-test_client_batch_size", "1", "8",
         "-test_num_client", "1", "2", "-test_max_batch_size", "256", "-test_pooling_layer", "-2", "-num_repeat", "1",
         "-compare_rounds", "1",
         "-common_client_batch_size", "64", "-skip", "int8", "padding", "-output", str(output)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output / "results.csv") as f:
        rows = list(csv.DictReader(f))
    tables = {(r["table"], r["value"]) for r in rows}
    assert {("client_batch_size", "1"), ("client_batch_size", "8"), ("num_client", "1"), ("num_client", "2"),
            ("max_seq_len", "40"), ("max_batch_size", "256"), ("pooling_layer", "-2")} <= tables
    assert all(float(r["sentences_per_s"]) > 0 and not r["errors"] for r in rows)
    service_rows = [r for r in rows if r["value"].startswith("service") or r["table"] != "compare"]
    assert all(100 < float(r["peak_rss_mb"]) < 4000 for r in service_rows)  # the whole tree: bridge + triton + stub
    compared = {r["value"] for r in rows if r["table"] == "compare"}
    assert {"onnxruntime in process, max_seq_len 40", "sentence-transformers encode, max_seq_len 40",
            "reference graph in process, max_seq_len 40", "service fp32, max_seq_len 40",
            "service, one sentence"} <= compared
    summary = (output / "summary.md").read_text()
    assert summary.startswith("## Ratios")
    assert re.search(r"service fp32 / onnxruntime in process \(max_seq_len 40\): \d+\.\d\dx", summary)
    facts = json.loads((output / "facts.json").read_text())
    # The reference graph (transformers + torch.onnx.export + onnxruntime's optimizer) computes what the export
    # computes, so the three in-process ratios compare equal work.
    assert re.search(r"exported fp32 graph / reference graph .* 32x40 \d+\.\d\dx .* 64x40 \d+\.\d\dx .* "
                     r"16x128 \d+\.\d\dx", summary)
    assert re.search(r"service fp32 / reference graph in process \(max_seq_len 40\): \d+\.\d\dx", summary)
    assert sorted(facts["graph_vs_reference"]) == ["16x128", "32x40", "64x40"]
    assert all(r["max_abs_difference"] < 1e-4 and r["ratio"] > 0 for r in facts["graph_vs_reference"].values())
    assert isinstance(facts["perf_analyzer"], list) and facts["perf_analyzer"][0]["inferences_per_s"] > 0
    # The same vectors as the same ONNX in process (64 sentences: three of the bridge's chunks, in flight together, so
    # Triton merges them and model.py runs them in calls of its size).
    assert facts["service_vs_onnxruntime_max_abs"] < 1e-4
    for table in ("client_batch_size", "num_client"):
        assert (output / f"{table}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_xlmr_base_model_the_benchmark_writes_is_one_bert_export_takes(tmp_path):
    """`-model xlmr-base` writes its XLM-R with random weights and exports it: the same writer at a tiny shape, through
    the real exporter (a placeholder tokenizer of a kind the exporter refuses once broke the whole mode)."""
    from bert_bench.family_speed import export, write_xlmr_base

    source = write_xlmr_base(tmp_path / "xlmr", vocab_size=300, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=37)
    assert export(source, tmp_path / "models", "xlmr").is_file()
