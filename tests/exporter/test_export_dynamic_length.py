"""max_seq_len NONE: one graph serves any length; NONE pooling returns [B, T, D] with padding rows zero."""
from __future__ import annotations

import numpy as np
from export_oracle import TINY, assert_close, make_batch, original_pooling, reference, run_onnx

from bert_exporter.manifest import ExportManifest


def test_two_batches_of_different_lengths(export_tiny, tiny_hf):
    folder = export_tiny("hf", pooling_strategy="REDUCE_MEAN", max_seq_len=None)
    assert ExportManifest.load(folder).max_seq_len is None
    for lengths, width in (([5, 3], 5), ([40, 17, 9, 2 + 1], 40)):
        feeds = make_batch(lengths, width, vocab_size=TINY["vocab_size"], seed=width)
        actual = run_onnx(folder / "1" / "model.onnx", feeds)
        assert actual.shape == (len(lengths), TINY["hidden_size"])
        expected = original_pooling(reference(tiny_hf.oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-2])
        assert_close(actual, expected)


def test_none_pooling_gives_token_vectors_with_zero_padding(export_tiny, tiny_hf):
    folder = export_tiny("hf", pooling_strategy="NONE", pooling_layer=[-1], max_seq_len=None)
    for lengths, width in (([6, 4], 6), ([21, 8, 13], 21)):
        feeds = make_batch(lengths, width, vocab_size=TINY["vocab_size"], seed=width)
        actual = run_onnx(folder / "1" / "model.onnx", feeds)
        assert actual.shape == (len(lengths), width, TINY["hidden_size"])
        padding = feeds["input_mask"] == 0
        assert padding.any() and np.all(actual[padding] == 0.0)
        assert np.all(np.abs(actual[~padding]).sum(axis=-1) > 0)
        expected = original_pooling(reference(tiny_hf.oracle, feeds), feeds["input_mask"], "NONE", [-1])
        assert_close(actual, expected)
