"""Unit tests of reading sources (weights.py, source.py, bert_config.py): formats, prefixes, vocabularies, refusals.

The numbers each format produces are checked end to end in test_export_pooling.py; here the HF variants (``bert.``
prefix, pytorch_model.bin, sharded safetensors, tokenizer.json-only vocabulary) must read the same tensors as the
plain safetensors folder, whose mapping that matrix proves right.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from export_oracle import TINY

from bert_exporter.bert_config import BertConfig
from bert_exporter.errors import SourceError
from bert_exporter.source import read_vocab
from bert_exporter.weights import expected_shapes, load_weights


def tiny_config() -> BertConfig:
    return BertConfig(**{k: v for k, v in TINY.items()})


def load(folder):
    weights, _ = load_weights(folder, config=tiny_config(), ckpt_name="bert_model.ckpt")
    return weights


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def plain(tiny_hf):
    return load(tiny_hf.model_dir)


def test_plain_folder_has_every_tensor(plain):
    assert set(expected_shapes(tiny_config())) <= set(plain)
    assert plain["encoder/layer_0/intermediate/dense/kernel"].shape == (TINY["hidden_size"], TINY["intermediate_size"])
    assert {"pooler/dense/kernel", "pooler/dense/bias"} <= set(plain)


def test_bert_prefix_and_task_heads(tiny_hf, plain, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = {f"bert.{name}": value for name, value in load_file(str(tiny_hf.model_dir / "model.safetensors")).items()}
    tensors["classifier.weight"] = np.zeros((2, TINY["hidden_size"]), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert_same_weights(load(tmp_path), plain)


def test_sharded_safetensors(tiny_hf, plain, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tiny_hf.model_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, str(tmp_path / shard))
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_weights(load(tmp_path), plain)


def test_pytorch_model_bin(tiny_model, plain, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({f"bert.{k}": v for k, v in tiny_model.state_dict().items()}, tmp_path / "pytorch_model.bin")
    assert_same_weights(load(tmp_path), plain)


def test_google_checkpoint_reads_the_same_tensors(tiny_google, plain):
    assert_same_weights(load(tiny_google.model_dir), plain)


def test_vocab_from_tokenizer_json(tiny_hf, tmp_path):
    tokens = read_vocab(tiny_hf.model_dir)
    vocab = {token: index for index, token in enumerate(tokens)}
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": vocab}}))
    assert read_vocab(tmp_path) == tokens


def test_vocab_keeps_unusual_tokens(tmp_path):
    tokens = ["[PAD]", "a\u2028b", "\u00e9t\u00e9", "##\u4e2d", "x\x85y"]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    assert read_vocab(tmp_path) == tokens


def test_missing_tensor_is_a_source_error(tiny_hf, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tiny_hf.model_dir / "model.safetensors"))
    del tensors["encoder.layer.2.attention.self.key.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(SourceError, match="missing"):
        load(tmp_path)


@pytest.mark.parametrize(("config", "fragment"), [
    ({"model_type": "gpt2", **TINY}, "model_type"),
    ({"hidden_size": 32}, "missing"),
    ({**TINY, "hidden_act": "swish"}, "hidden_act"),
    ({**TINY, "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ([1, 2], "JSON object"),
])
def test_configs_that_are_not_bert(tmp_path, config, fragment):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SourceError, match=fragment):
        BertConfig.from_file(path)


def test_google_config_defaults(tiny_google):
    config = BertConfig.from_file(tiny_google.model_dir / "bert_config.json")
    assert config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"


def test_checkpoint_only_folder_has_no_config(tiny_tuned, tmp_path):
    from bert_exporter.source import config_path

    with pytest.raises(SourceError, match="neither"):
        config_path(tiny_tuned.tuned_model_dir, "bert_config.json")


def test_a_tensor_of_the_wrong_shape_is_a_source_error(tiny_hf, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tiny_hf.model_dir / "model.safetensors"))
    tensors["encoder.layer.3.output.dense.weight"] = tensors["encoder.layer.3.output.dense.weight"][:, :-1].copy()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(SourceError, match="encoder/layer_3/output/dense/kernel has shape"):
        load(tmp_path)
