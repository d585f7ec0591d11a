"""The HTTP-vs-ZeroMQ benchmark script runs end to end on both shapes (a tiny load; the real figures are in
docs/PERFORMANCE.md)."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_http_load_benchmark_smoke(http_bridge, tmp_path):
    from bert_bench.http_load import main

    bridge = http_bridge.bridge
    output = tmp_path / "http_vs_zmq"
    result = main(["-port", str(bridge.port), "-port_out", str(bridge.port_out), "-http_port",
                   str(http_bridge.http_port), "-shapes", "3x4", "1x8", "-rounds", "2",
                   "-bridge_pid", str(bridge.process.pid), "-output", str(output)])
    assert [(shape["shape"], shape["rounds"]) for shape in result["shapes"]] == [("3x4", 2), ("1x8", 6)]
    for shape in result["shapes"]:
        # the same export behind both fronts: the JSON floats read back are ZeroMQ's float32 exactly
        assert shape["max_abs_difference"] == 0
        for front in ("zmq", "http"):
            entry = shape["fronts"][front]
            assert len(entry["batch_s"]) == shape["rounds"]
            assert entry["sentences_per_s"] > 0 and entry["bridge_cpu_ms_per_sentence"] >= 0
        assert shape["ratio_http_to_zmq"] == (shape["fronts"]["http"]["sentences_per_s"]
                                              / shape["fronts"]["zmq"]["sentences_per_s"])
    written = json.loads(output.with_suffix(".json").read_text())
    assert written["ratio_http_to_zmq"] == {"3x4": result["shapes"][0]["ratio_http_to_zmq"],
                                            "1x8": result["shapes"][1]["ratio_http_to_zmq"]}
    assert "| 3 x 4 | 2 | http |" in output.with_suffix(".md").read_text()


def test_a_shape_is_clients_x_sentences():
    from bert_bench.http_load import build_parser

    assert build_parser().parse_args(["-shapes", "64x32", "1x256"]).shapes == [("64x32", 64, 32), ("1x256", 1, 256)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-shapes", "64-32"])
