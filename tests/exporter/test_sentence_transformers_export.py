"""bert-export's -pooling_strategy AUTO (a sentence-transformers folder's own settings) and -normalize.

Folders with other pooling modes are built from the packaged all-MiniLM-L6-v2: every file linked, the Pooling config
rewritten. Reading them needs no TensorFlow; the refusals go through the real command.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_oracle import TINY, assert_close, make_batch, original_pooling, reference, run_onnx

from bert_exporter.bert_config import BertConfig
from bert_exporter.errors import SourceError
from bert_exporter.manifest import PoolingStrategy
from bert_exporter.options import packaged_model_dir
from bert_exporter.sentence_transformers import read_sentence_transformers


def sentence_transformers_folder(tmp_path: Path, pooling: dict, modules: list | None = None) -> Path:
    """The packaged model with ``pooling`` as its 1_Pooling/config.json (and ``modules`` as its modules.json)."""
    packaged = packaged_model_dir()
    folder = tmp_path / "st-model"
    (folder / "1_Pooling").mkdir(parents=True)
    for item in packaged.iterdir():
        if item.is_file() and not (modules is not None and item.name == "modules.json"):
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def minilm_config() -> BertConfig:
    return BertConfig.from_file(packaged_model_dir() / "config.json")


def bert_export(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_exporter.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def assert_refused_in_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len([line for line in lines if "error" in line]) == 1, result.stderr
    assert lines[-1].startswith("bert-export: error: ")
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_the_packaged_model_resolves_to_mean_over_the_last_layer_normalized_at_256():
    model = read_sentence_transformers(packaged_model_dir(), minilm_config())
    assert (model.pooling_mode, model.strategy, model.normalize) == ("mean", PoolingStrategy.REDUCE_MEAN, True)
    assert (model.max_seq_length, model.do_lower_case, model.tokenizer_lowercases) == (256, False, True)
    assert model.record()["pooling_layer"] == [-1] and model.record()["resolved_from"] == "AUTO"


@pytest.mark.parametrize(("pooling", "mode", "strategy"), [
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls", PoolingStrategy.FIRST_TOKEN),
    ({"pooling_mode_max_tokens": True}, "max", PoolingStrategy.REDUCE_MAX),
    ({"pooling_mode": "lasttoken"}, "lasttoken", PoolingStrategy.LAST_TOKEN),  # sentence-transformers 6 spelling
    ({"pooling_mode": ["mean"]}, "mean", PoolingStrategy.REDUCE_MEAN),
])
def test_pooling_modes_with_an_exact_equivalent(tmp_path, pooling, mode, strategy):
    model = read_sentence_transformers(sentence_transformers_folder(tmp_path, pooling), minilm_config())
    assert (model.pooling_mode, model.strategy) == (mode, strategy)


@pytest.mark.parametrize(("pooling", "named"), [
    ({"pooling_mode_mean_sqrt_len_tokens": True}, "'mean_sqrt_len_tokens'"),
    ({"pooling_mode": "weightedmean"}, "'weightedmean'"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "'cls+mean'"),
    ({"pooling_mode": ["mean", "max"]}, "'mean+max'"),  # concatenated in another order than REDUCE_MEAN_MAX
])
def test_pooling_modes_without_an_equivalent_are_refused_by_name(tmp_path, pooling, named):
    with pytest.raises(SourceError, match="has no equivalent pooling strategy") as refused:
        read_sentence_transformers(sentence_transformers_folder(tmp_path, pooling), minilm_config())
    assert named in str(refused.value) and "\n" not in str(refused.value)


MODULES_WITH_DENSE = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def dense_folder(tmp_path: Path, activation=None) -> Path:
    """The packaged model with a 384 -> 96 Dense layer (random weights, saved by sentence-transformers) before
    its Normalize module."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    folder = sentence_transformers_folder(tmp_path, {"pooling_mode_mean_tokens": True}, MODULES_WITH_DENSE)
    torch.manual_seed(7)
    dense = Dense(384, 96, activation_function=activation or torch.nn.Tanh())
    with torch.no_grad():
        dense.linear.weight.normal_(0, 0.2)
        dense.linear.bias.normal_(0, 0.2)
    (folder / "2_Dense").mkdir()
    dense.save(str(folder / "2_Dense"))
    return folder


def test_a_dense_module_is_read_with_its_activation(tmp_path):
    model = read_sentence_transformers(dense_folder(tmp_path), minilm_config())
    assert model.dense == ({"path": "2_Dense", "in_features": 384, "out_features": 96, "bias": True,
                            "activation": "tanh"},)
    assert model.normalize


def test_a_dense_activation_without_an_equivalent_is_refused(tmp_path):
    import torch

    with pytest.raises(SourceError, match="activation torch.nn.modules.activation.Softplus has no equivalent"):
        read_sentence_transformers(dense_folder(tmp_path, torch.nn.Softplus()), minilm_config())


def test_modules_after_normalize_are_refused(tmp_path):
    modules = [*MODULES_WITH_DENSE[:2], MODULES_WITH_DENSE[3], {**MODULES_WITH_DENSE[2], "idx": 3}]
    folder = sentence_transformers_folder(tmp_path, {"pooling_mode_mean_tokens": True}, modules)
    with pytest.raises(SourceError, match="Normalize -> sentence_transformers.models.Dense"):
        read_sentence_transformers(folder, minilm_config())


@pytest.mark.slow
def test_a_dense_model_exports_to_what_sentence_transformers_encodes(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = dense_folder(tmp_path)
    result = bert_export("-model_dir", folder, "-pooling_strategy", "AUTO", "-target", "onnx", "-output",
                         tmp_path / "repository", "-name", "dense")
    assert result.returncode == 0, result.stderr
    sentences = ["a Dense layer after the pooling", "Ελληνικά και 日本語", "short"]
    model = SentenceTransformer(str(folder), device="cpu")
    features = model.preprocess(sentences)
    feeds = {"input_ids": features["input_ids"].numpy().astype(np.int32),
             "input_mask": features["attention_mask"].numpy().astype(np.int32),
             "segment_ids": features["token_type_ids"].numpy().astype(np.int32)}
    actual = run_onnx(tmp_path / "repository" / "dense" / "1" / "model.onnx", feeds)
    expected = model.encode(sentences, convert_to_numpy=True)
    assert actual.shape == expected.shape == (3, 96)
    assert_close(actual, expected, tolerance=1e-5)


def test_bert_export_refuses_an_unsupported_mode_in_one_line(tmp_path):
    folder = sentence_transformers_folder(tmp_path, {"pooling_mode_weightedmean_tokens": True})
    result = bert_export("-model_dir", folder, "-pooling_strategy", "AUTO", "-output", tmp_path / "repository")
    assert_refused_in_one_line(result, "pooling mode 'weightedmean'", "no equivalent")
    assert not (tmp_path / "repository" / "bert").exists()


def test_auto_on_a_folder_without_sentence_transformers_files_is_refused_in_one_line(tiny_hf, tmp_path):
    result = bert_export("-model_dir", tiny_hf.model_dir, "-pooling_strategy", "auto", "-output", tmp_path)
    assert_refused_in_one_line(result, "-pooling_strategy AUTO", "no modules.json")


def test_auto_refuses_a_pooling_layer_of_its_own(tmp_path):
    result = bert_export("-pooling_strategy", "AUTO", "-pooling_layer", "-2", "-output", tmp_path)
    assert_refused_in_one_line(result, "-pooling_layer")


MULTILINGUAL = ["Café naïve résumé", "ΟΔΥΣΣΕΥΣ ΚΑΙ Ο ΚΥΚΛΩΨ", "東京は日本の首都です。", "مرحبا بالعالم",
                "I ❤️ emoji 🎉👍🏽 🇫🇷", "Straße İstanbul ǅ ﬁne ＡＢＣ", "unassigned \u0378 \U000e0001", "a [SEP] b"]


def test_the_exported_tokenizer_splits_text_as_sentence_transformers_does(tmp_path):
    from sentence_transformers import SentenceTransformer

    from bert_bridge.core.tokenization import TokenizerSettings, WordPieceTokenizer
    from bert_exporter.source import read_vocab
    from bert_exporter.tokenizer_files import write_tokenizer

    packaged = packaged_model_dir()
    write_tokenizer(packaged, tmp_path / "tokenizer.json", model_type="bert", lowercase_first=False,
                    vocab=read_vocab(packaged))
    settings = TokenizerSettings(vocab_file=packaged / "vocab.txt", max_seq_len=256)
    own = WordPieceTokenizer(dataclasses.replace(settings, tokenizer_file=tmp_path / "tokenizer.json"))
    original = WordPieceTokenizer(settings)
    oracle = SentenceTransformer(str(packaged), device="cpu").tokenizer
    expected = [oracle(text)["input_ids"] for text in MULTILINGUAL]
    assert [e.input_ids for e in own.encode(MULTILINGUAL)] == expected
    # Why AUTO carries the model's tokenizer: the original's rules split some of these otherwise.
    assert [e.input_ids for e in original.encode(MULTILINGUAL)] != expected


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["REDUCE_MEAN", "NONE"])
def test_normalize_divides_each_vector_by_its_length(export_tiny, tiny_hf, strategy):
    folder = export_tiny("hf", pooling_strategy=strategy, normalize=True)
    feeds = make_batch([9, 5, 2], 12, vocab_size=TINY["vocab_size"])
    actual = run_onnx(folder / "1" / "model.onnx", feeds)
    pooled = original_pooling(reference(tiny_hf.oracle, feeds), feeds["input_mask"], strategy, [-2])
    length = np.linalg.norm(pooled, axis=-1, keepdims=True)
    expected = pooled / np.maximum(length, 1e-12)  # NONE: each token's vector; padding rows stay zero
    assert_close(actual, expected, tolerance=1e-6)
    if strategy == "NONE":
        assert not actual[2, 2:].any()
