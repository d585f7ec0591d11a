"""The memory-per-model benchmark runs end to end (two models, a tiny load; the figures are in docs/PERFORMANCE.md)."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_models_memory_benchmark_smoke(default_export, tmp_path):
    from bert_bench.models_memory import main

    output = tmp_path / "models_memory"
    result = main(["-model_dir", str(default_export.folder), "-counts", "2", "-requests", "1", "-batch_size", "3",
                   "-period_s", "0.2", "-output", str(output)])
    run = result["runs"][0]
    assert run["models"] == ["bert", "bert-2"] and run["errors"] == [] and run["sentences"] == 6
    # both parts measured: the bridge, and tritonserver with one python backend stub per model
    assert run["peak_mb"]["total"] >= run["idle_mb"]["total"] > run["idle_mb"]["bridge"] > 0
    assert json.loads(output.with_suffix(".json").read_text())["runs"][0]["models"] == run["models"]
    assert "| 2: bert, bert-2 |" in output.with_suffix(".md").read_text()
