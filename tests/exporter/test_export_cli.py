"""The ``bert-export`` command line: argparse-like lists, instant --help, one-line errors with exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bert_exporter.cli import fold_list_options
from bert_exporter.manifest import ExportManifest


def bert_export(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_exporter.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, result.stderr
    assert result.stderr.splitlines()[-1] == error_lines[0]
    assert error_lines[0].startswith("bert-export: error: ")
    for fragment in fragments:
        assert fragment.lower() in error_lines[0].lower(), error_lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["-pooling_layer", "-4", "-3", "-2", "-1", "-cpu"], ["-pooling_layer", "-4,-3,-2,-1", "-cpu"]),
    (["--pooling_layer", "3", "-device_map", "0", "1"], ["--pooling_layer", "3", "-device_map", "0,1"]),
    (["-pooling_layer=-1,-2", "-name", "x"], ["-pooling_layer=-1,-2", "-name", "x"]),
    (["-device_map", "-pooling_layer", "-1"], ["-device_map", "-pooling_layer", "-1"]),
])
def test_list_options_take_several_values_like_argparse(args, expected):
    assert fold_list_options(args) == expected


def test_help_is_instant_and_imports_nothing_heavy():
    probe = ("import sys, time; t = time.monotonic(); from bert_exporter.cli import main; code = main(['--help']); "
             "heavy = sorted(m for m in ('tensorflow', 'onnx', 'onnxruntime', 'torch', 'numpy') "
             "if m in sys.modules); print(code, heavy, round(time.monotonic() - t, 3), file=sys.stderr)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    elapsed_s = time.monotonic() - started
    assert "-pooling_layer" in result.stdout and "-target" in result.stdout
    code, heavy, _ = result.stderr.strip().splitlines()[-1].split(" ", 2)
    assert (code, heavy.split("]")[0] + "]") == ("0", "[]"), result.stderr
    assert elapsed_s < 5, f"--help took {elapsed_s:.1f}s"


def test_cli_end_to_end_with_lists_and_dynamic_length(tiny_hf, tmp_path):
    result = bert_export("-model_dir", tiny_hf.model_dir, "-pooling_strategy", "cls_token", "-pooling_layer",
                         "-4", "-3", "-2", "-1", "-max_seq_len", "NONE", "-device_map", "0", "1", "-num_worker", "2",
                         "-target", "onnx", "-output", tmp_path, "-name", "lists")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "lists"
    assert result.stdout.strip() == str(folder)
    for step in ("reading", "building", "converting", "wrote"):
        assert f"bert-export: {step}" in result.stderr
    manifest = ExportManifest.load(folder)
    assert (manifest.pooling_strategy, manifest.pooling_layer, manifest.max_seq_len) == ("FIRST_TOKEN",
                                                                                         (-4, -3, -2, -1), None)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [(list(g.gpus), g.count) for g in config.instance_group] == [([0], 1), ([1], 1)]


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_missing_model_folder(tmp_path):
    assert_one_line_error(bert_export("-model_dir", tmp_path / "nowhere", "-output", tmp_path), "does not exist")


def test_config_that_is_not_bert(tmp_path):
    write_json(tmp_path / "roberta" / "config.json", {"model_type": "roberta", "hidden_size": 8})
    assert_one_line_error(bert_export("-model_dir", tmp_path / "roberta", "-output", tmp_path), "not a BERT")


def test_folder_without_weights(tiny_hf, tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        (folder / name).write_bytes((tiny_hf.model_dir / name).read_bytes())
    assert_one_line_error(bert_export("-model_dir", folder, "-output", tmp_path), "no weights")


def test_corrupt_weights_file(tiny_hf, tmp_path):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        (folder / name).write_bytes((tiny_hf.model_dir / name).read_bytes())
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    assert_one_line_error(bert_export("-model_dir", folder, "-output", tmp_path), "reading the model")


def test_layer_out_of_range(tiny_hf, tmp_path):
    assert_one_line_error(bert_export("-model_dir", tiny_hf.model_dir, "-pooling_layer", "-1", "-5",
                                      "-output", tmp_path), "-pooling_layer -5", "4 encoder layers")
    assert not list(tmp_path.iterdir()), "a failed export must leave nothing behind"


@pytest.mark.parametrize(("args", "fragment"), [
    (["-pooling_strategy", "REDUCE_MEDIAN"], "unknown pooling strategy"),
    (["-max_seq_len", "3"], "-max_seq_len"),
    (["-max_seq_len", "many"], "-max_seq_len"),
    (["-target", "tflite"], "-target"),
    (["-pooling_layer", "x"], "-pooling_layer"),
    (["-max_seq_len", "NONE", "-target", "tensorrt"], "fixed -max_seq_len"),
    (["-target", "embedded", "--trt-accelerator"], "onnx"),
    (["-no_such_flag"], "no_such_flag"),
])
def test_bad_options(tmp_path, args, fragment):
    assert_one_line_error(bert_export(*args, "-output", tmp_path), fragment)


def test_tensorrt_without_tensorrt_or_gpu(tiny_hf, tmp_path):
    from bert_exporter.targets import cuda_device_count

    import importlib.util
    if importlib.util.find_spec("tensorrt") is not None and cuda_device_count() > 0:
        pytest.skip("TensorRT and a GPU are available here: test_export_tensorrt.py builds the plan instead")
    started = time.monotonic()
    result = bert_export("-model_dir", tiny_hf.model_dir, "-target", "tensorrt", "-output", tmp_path)
    assert_one_line_error(result, "tensorrt")
    assert "GPU" in result.stderr
    assert time.monotonic() - started < 10, "the check must come before any conversion"
