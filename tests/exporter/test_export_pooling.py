"""Every pooling strategy x pooling_layer x mask_cls_sep, for the HF folder, the Google checkpoint and a fine-tuned
override: the exported ONNX equals the original's pooling formulas over transformers' hidden states.

-mask_cls_sep does not change the graph (the bridge zeroes the mask at [CLS]/[SEP]), so each export is checked with
both masks; CLS_POOLED ignores the layer list, as the original did, so it is exported once per source.
"""
from __future__ import annotations

import pytest

from export_oracle import TINY, assert_close, make_batch, mask_cls_sep, original_pooling, reference, run_onnx

STRATEGIES = ["NONE", "REDUCE_MAX", "REDUCE_MEAN", "REDUCE_MEAN_MAX", "FIRST_TOKEN", "LAST_TOKEN"]
LAYERS = [[-1], [-2], [-4, -3, -2, -1]]
SOURCES = ["hf", "google", "tuned"]

CASES = [(source, strategy, layers) for source in SOURCES for strategy in STRATEGIES for layers in LAYERS]
CASES += [(source, "CLS_POOLED", [-2]) for source in SOURCES]


@pytest.mark.parametrize("masked", [False, True], ids=["mask", "mask_cls_sep"])
@pytest.mark.parametrize(("source", "strategy", "layers"), CASES,
                         ids=[f"{s}-{p}-{'_'.join(map(str, l))}" for s, p, l in CASES])
def test_onnx_equals_original_pooling_over_transformers(export_tiny, sources, source, strategy, layers, masked):
    folder = export_tiny(source, pooling_strategy=strategy, pooling_layer=layers, max_seq_len=12)
    feeds = make_batch([12, 7, 4], 12, vocab_size=TINY["vocab_size"], seed=len(layers))
    if masked:
        feeds = mask_cls_sep(feeds)

    actual = run_onnx(folder / "1" / "model.onnx", feeds)

    expected = original_pooling(reference(sources[source].oracle, feeds), feeds["input_mask"], strategy, layers)
    assert_close(actual, expected)


def test_tuned_weights_are_the_ones_used(export_tiny, sources):
    """The fine-tuned override must not silently fall back to the pretrained weights."""
    feeds = make_batch([9, 5], 9, vocab_size=TINY["vocab_size"])
    tuned = run_onnx(export_tiny("tuned", pooling_layer=[-1], max_seq_len=12) / "1" / "model.onnx", feeds)
    pretrained = original_pooling(reference(sources["google"].oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-1])
    assert abs(tuned - pretrained).max() > 10 * 1e-4
