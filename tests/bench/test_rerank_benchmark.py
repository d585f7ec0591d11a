"""The rerank benchmark runs end to end (a few passages, one round; the figures are the full run's, in
docs/PERFORMANCE.md): every contender measured, on the same scores as CrossEncoder.predict."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_rerank_benchmark_smoke(tmp_path):
    from bert_bench.cli import main

    main(["-rerank", "-rerank_documents", "12", "-rerank_tokens", "60", "-compare_rounds", "1", "-output",
          str(tmp_path), "-work_dir", str(tmp_path / "work")])
    result = json.loads((tmp_path / "rerank.json").read_text())
    assert result["documents"] == 12 and 60 <= result["mean_pair_tokens"] <= 80
    assert set(result["documents_per_s"]) == {"service, POST /v1/rerank", "service, ZeroMQ 'query ||| passage'",
                                              "CrossEncoder.predict in process"}
    assert all(speed > 0 for speed in result["documents_per_s"].values())
    assert result["max_abs_difference_vs_cross_encoder"] <= 1e-5
    assert "| service, POST /v1/rerank |" in (tmp_path / "rerank.md").read_text()
