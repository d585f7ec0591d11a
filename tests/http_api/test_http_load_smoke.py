"""The HTTP-vs-ZeroMQ benchmark script runs end to end (a tiny load; the real figure is in docs/HTTP.md)."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_http_load_benchmark_smoke(http_bridge, tmp_path):
    from bert_bench.http_load import main

    bridge = http_bridge.bridge
    output = tmp_path / "http_vs_zmq"
    result = main(["-port", str(bridge.port), "-port_out", str(bridge.port_out), "-http_port",
                   str(http_bridge.http_port), "-num_client", "3", "-batch_size", "4", "-num_repeat", "2",
                   "-rounds", "1", "-bridge_pid", str(bridge.process.pid), "-output", str(output)])
    assert result["errors"] == 0
    assert [run["front"] for run in result["runs"]] == ["zmq", "http"]
    assert all(run["requests"] == 6 for run in result["runs"])
    assert result["ratio_http_to_zmq"] > 0
    assert set(result["bridge_cpu_ms_per_sentence"]) == {"zmq", "http"}
    assert json.loads(output.with_suffix(".json").read_text())["ratio_http_to_zmq"] == result["ratio_http_to_zmq"]
    assert "HTTP / ZeroMQ" in output.with_suffix(".md").read_text()
