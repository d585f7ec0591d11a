"""-quantize int8: the accuracy check built into the export, its refusal, and an int8 export served by the bridge."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from bert_exporter.manifest import ExportManifest
from harness import free_port

pytestmark = pytest.mark.slow

# Held out: none of these is in bert_exporter.quantize.CHECK_SENTENCES.
HELD_OUT = [
    "A cup of coffee in the morning helps me think clearly.",
    "Die Katze schläft den ganzen Nachmittag auf dem Sofa.",
    "Nous avons visité trois musées pendant notre séjour à Paris.",
    "Mi hermano estudia ingeniería en la universidad de Madrid.",
    "Я люблю читать книги по вечерам.",
    "今日はとても暑いので、冷たい飲み物が欲しいです。",
    "这家餐厅的饺子非常好吃。",
    "the committee approved the budget after a long debate about infrastructure spending",
    "hi",
    "Der Vertrag wurde gestern unterschrieben und tritt im Januar in Kraft.",
]


def bert_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_exporter.cli", *args], capture_output=True, text=True,
                          timeout=600)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_accuracy_check_refuses_unless_forced(tiny_hf, tmp_path):
    common = ["-model_dir", str(tiny_hf.model_dir), "-output", str(tmp_path), "-quantize", "int8"]
    refused = bert_export(*common, "-name", "strict", "-quantize_min_cosine", "1.0")
    assert refused.returncode != 0
    error = refused.stderr.strip().splitlines()[-1]
    assert "worst cosine to fp32" in error and "-force_quantize" in error
    assert not (tmp_path / "strict").exists()

    forced = bert_export(*common, "-name", "forced", "-quantize_min_cosine", "1.0", "-force_quantize")
    assert forced.returncode == 0, forced.stderr
    manifest = ExportManifest.load(tmp_path / "forced")
    assert manifest.quantize == "int8"
    assert 0.5 < manifest.extra["quantize_worst_cosine"] < 1.0
    assert "worst cosine" in forced.stderr  # printed during the export
    # Each progress line once: onnxruntime's quantization configures the root logger when imported, which printed
    # every line of bert-export a second time in its own format.
    messages = [line.removeprefix("bert-export: ") for line in forced.stderr.splitlines()
                if line.startswith("bert-export: ")]
    assert messages and all(forced.stderr.count(m) == messages.count(m) for m in messages), forced.stderr
    assert forced.stderr.count("int8: worst cosine to fp32") == 1, forced.stderr


@pytest.fixture(scope="module")
def int8_export():
    """The packaged model through `bert-export -quantize int8`, once for the module: run the way bert-serving-start
    -quantize int8 runs it (the same command, into the bridge's cache), so the bridge below serves this export instead
    of making a second one (tens of seconds each). A failing export raises here."""
    from bert_bridge.config import parse_args
    from bert_bridge.model_source import resolve_model

    return resolve_model(parse_args(["-quantize", "int8"])).folder


def test_int8_export_is_quantized_and_checked(int8_export):
    folder = int8_export
    manifest = json.loads((folder / "bert_export.json").read_text())
    assert manifest["quantize"] == "int8" and manifest["extra"]["quantize_worst_cosine"] >= 0.99
    ops = {node.op_type for node in onnx.load(str(folder / "1" / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops)


def test_bridge_serves_int8_close_to_fp32(start_bridge, legacy_client, default_bridge, int8_export):
    with legacy_client.BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60000) as bc:
        fp32 = bc.encode(HELD_OUT)
    with start_bridge("-quantize", "int8") as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            int8 = bc.encode(HELD_OUT)
    assert fp32.shape == int8.shape
    # Dynamic quantization takes each call's value range, padding included, so a row's int8 vector depends a little on
    # its chunk: "hi" measured 0.9933 alone, 0.989 padded to 8 or 16 beside longer sentences. The export's own check
    # and the benchmark's held-out set (docs/PERFORMANCE.md) hold the 0.99 target; here every row stays near it.
    assert cosines(fp32, int8).min() >= 0.985
    assert cosines(fp32, int8).mean() >= 0.99
    assert np.abs(fp32 - int8).max() > 1e-4  # really another model, not the fp32 one


def test_quantize_contradicting_an_fp32_folder_is_refused(default_export, start_bridge):
    command = [sys.executable, "-m", "bert_bridge.cli", "-model_dir", str(default_export.folder), "-quantize", "int8",
               "-port", str(free_port()), "-port_out", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "-quantize 'int8' (exported with None)" in result.stderr
