"""Each target's model folder: layout, manifest, config.pbtxt parsed back through the protobuf, and numbers."""
from __future__ import annotations

import numpy as np
import pytest
from export_oracle import TINY, assert_close, make_batch, original_pooling, reference, run_onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bert_exporter.manifest import ExportManifest


def parse_config(folder) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def assert_common_config(config, *, name, max_batch_size, dims, data_type="TYPE_FP32"):
    assert config.name == name
    assert config.max_batch_size == max_batch_size
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (n, model_config_pb2.TYPE_INT32, [-1]) for n in ("input_ids", "input_mask", "segment_ids")]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("encodes", model_config_pb2.DataType.Value(data_type), dims)]
    assert config.HasField("dynamic_batching") and config.dynamic_batching.priority_levels == 0  # see triton_config


def test_embedded_target_folder(export_tiny, tiny_hf):
    folder = export_tiny("hf", target="embedded", pooling_layer=[-4, -3, -2, -1], max_batch_size=64,
                         priority_batch_size=8, num_worker=3, mask_cls_sep=True)

    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/__pycache__", "1/model.onnx", "1/model.py", "bert_export.json", "config.pbtxt", "vocab.txt"]
    assert (folder / "1" / "__pycache__").is_file(), "a file, so that Python cannot write bytecode caches here"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"
    assert (folder / "vocab.txt").read_text() == (tiny_hf.model_dir / "vocab.txt").read_text()

    config = parse_config(folder)
    assert_common_config(config, name=folder.name, max_batch_size=64, dims=[4 * TINY["hidden_size"]])
    assert config.backend == "python"
    assert [(g.kind, g.count, list(g.gpus)) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 3, [])]

    manifest = ExportManifest.load(folder)
    assert (manifest.target, manifest.pooling_strategy, manifest.pooling_layer) == ("embedded", "REDUCE_MEAN",
                                                                                     (-4, -3, -2, -1))
    assert (manifest.max_seq_len, manifest.do_lower_case, manifest.mask_cls_sep) == (25, True, True)
    assert (manifest.output_dim, manifest.output_dtype) == (4 * TINY["hidden_size"], "float32")
    assert (manifest.max_batch_size, manifest.priority_batch_size) == (64, 8)
    assert manifest.max_position_embeddings == TINY["max_position_embeddings"]
    assert manifest.vocab_file == "vocab.txt"


def test_onnx_target_with_gpu_instances_and_tensorrt_accelerator(export_tiny):
    folder = export_tiny("hf", target="onnx", pooling_strategy="NONE", fp16=True, num_worker=3, device_map=[0, 2],
                         trt_accelerator=True, cased_tokenization=True)
    config = parse_config(folder)
    assert_common_config(config, name=folder.name, max_batch_size=256, dims=[-1, TINY["hidden_size"]],
                         data_type="TYPE_FP16")
    assert config.platform == "onnxruntime_onnx"
    gpu = model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [(g.kind, g.count, list(g.gpus)) for g in config.instance_group] == [(gpu, 2, [0]), (gpu, 1, [2])]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    manifest = ExportManifest.load(folder)
    assert (manifest.output_dtype, manifest.do_lower_case, manifest.pooling_strategy) == ("float16", False, "NONE")
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx"]


def test_fp16_output(export_tiny, tiny_hf):
    folder = export_tiny("hf", target="onnx", pooling_strategy="REDUCE_MEAN_MAX", fp16=True)
    feeds = make_batch([10, 6], 10, vocab_size=TINY["vocab_size"])
    actual = run_onnx(folder / "1" / "model.onnx", feeds)
    assert actual.dtype == np.float16
    expected = original_pooling(reference(tiny_hf.oracle, feeds), feeds["input_mask"], "REDUCE_MEAN_MAX", [-2])
    assert_close(actual, expected, tolerance=np.abs(expected).max() * 2e-3)


def test_savedmodel_target(export_tiny, tiny_google):
    tf = pytest.importorskip("tensorflow")
    folder = export_tiny("google", target="savedmodel", pooling_strategy="LAST_TOKEN", pooling_layer=[-1, -3])
    config = parse_config(folder)
    assert config.platform == "tensorflow_savedmodel"
    assert config.default_model_filename == "model.savedmodel"
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_AUTO, 1)]

    serving = tf.saved_model.load(str(folder / "1" / "model.savedmodel")).signatures["serving_default"]
    feeds = make_batch([8, 5, 8], 8, vocab_size=TINY["vocab_size"])
    actual = serving(**{name: tf.constant(value) for name, value in feeds.items()})["encodes"].numpy()
    expected = original_pooling(reference(tiny_google.oracle, feeds), feeds["input_mask"], "LAST_TOKEN", [-1, -3])
    assert_close(actual, expected)


def test_export_replaces_an_existing_model(tmp_path, tiny_hf):
    from bert_exporter.export import ExportOptions, export_model

    stale = tmp_path / "bert"
    (stale / "1").mkdir(parents=True)
    (stale / "1" / "stale.txt").write_text("from an earlier export")
    folder = export_model(ExportOptions(model_dir=tiny_hf.model_dir, output=tmp_path, target="onnx"))
    assert folder == stale
    assert not (folder / "1" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]


def test_no_position_embeddings(export_tiny, tiny_hf):
    import copy

    import torch

    folder = export_tiny("hf", pooling_strategy="REDUCE_MEAN", no_position_embeddings=True)
    assert ExportManifest.load(folder).no_position_embeddings
    # The oracle: the same transformers model with its position embeddings zeroed adds nothing for positions.
    oracle = copy.deepcopy(tiny_hf.oracle)
    with torch.no_grad():
        oracle.embeddings.position_embeddings.weight.zero_()
    feeds = make_batch([9, 4], 9, vocab_size=TINY["vocab_size"])
    actual = run_onnx(folder / "1" / "model.onnx", feeds)
    assert_close(actual, original_pooling(reference(oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-2]))
    with_positions = original_pooling(reference(tiny_hf.oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-2])
    assert np.abs(actual - with_positions).max() > 1e-3


def test_cls_pooled_needs_the_pooler(tiny_hf, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from bert_exporter.errors import OptionError
    from bert_exporter.export import ExportOptions, export_model

    source = tmp_path / "no-pooler"
    source.mkdir()
    shutil.copy(tiny_hf.model_dir / "config.json", source)
    shutil.copy(tiny_hf.model_dir / "vocab.txt", source)
    tensors = load_file(str(tiny_hf.model_dir / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("pooler.")}, str(source / "model.safetensors"))
    with pytest.raises(OptionError, match="pooler"):
        export_model(ExportOptions(model_dir=source, output=tmp_path / "out", pooling_strategy="CLS_POOLED"))
    # Without the pooler every other strategy still exports.
    assert export_model(ExportOptions(model_dir=source, output=tmp_path / "out", target="onnx")).is_dir()
