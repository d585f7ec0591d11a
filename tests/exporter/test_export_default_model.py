"""The packaged all-MiniLM-L6-v2 through the real command (no -model_dir), as `make serve` runs it.

One full-size export (tens of seconds): the embedded target's ONNX equals transformers' layer -2 mean pooling on
real sentences tokenized with the exported vocabulary, padded to max_seq_len 25 like the bridge does.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from export_oracle import assert_close, original_pooling, reference, run_onnx

from bert_exporter.manifest import ExportManifest

SENTENCES = ["hello world", "First do it, then do it right, then do it better.",
             "Triton serves the exported BERT with its pooling inside the graph.", "a"]


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory):
    repository = tmp_path_factory.mktemp("minilm-repository")
    result = subprocess.run([sys.executable, "-m", "bert_exporter.cli", "-target", "embedded", "-output",
                             str(repository), "-name", "minilm"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    return repository / "minilm"


def bridge_like_batch(vocab_file, max_seq_len: int) -> dict:
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
    tokenizer.enable_truncation(max_seq_len)
    tokenizer.enable_padding(length=max_seq_len)
    encodings = tokenizer.encode_batch(SENTENCES)
    return {"input_ids": np.array([e.ids for e in encodings], np.int32),
            "input_mask": np.array([e.attention_mask for e in encodings], np.int32),
            "segment_ids": np.array([e.type_ids for e in encodings], np.int32)}


@pytest.mark.slow
def test_default_model_matches_transformers(minilm_export):
    import transformers

    from bert_exporter.options import packaged_model_dir

    manifest = ExportManifest.load(minilm_export)
    assert (manifest.pooling_strategy, manifest.pooling_layer, manifest.max_seq_len) == ("REDUCE_MEAN", (-2,), 25)
    assert (manifest.output_dim, manifest.hidden_size, manifest.do_lower_case) == (384, 384, True)
    assert (minilm_export / "1" / "model.py").is_file()

    feeds = bridge_like_batch(minilm_export / "vocab.txt", manifest.max_seq_len)
    actual = run_onnx(minilm_export / "1" / "model.onnx", feeds)

    oracle = transformers.BertModel.from_pretrained(str(packaged_model_dir())).eval()
    expected = original_pooling(reference(oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-2])
    assert actual.shape == (len(SENTENCES), 384)
    assert_close(actual, expected)
