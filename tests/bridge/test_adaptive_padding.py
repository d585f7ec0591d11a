"""Length-adaptive padding in the service core (DESIGN.md, decision 4), against a recording stand-in for Triton.

The stand-in computes each row from its unpadded tokens only, as masked pooling does; so a row that comes back in the
wrong place, or a chunk padded differently than promised, shows in the vectors.
"""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from bert_bridge.config import MODEL_FLAGS, ModelSpec, parse_args
from bert_bridge.core.chunking import CHUNK_POSITIONS, LENGTH_STEP
from bert_bridge.core.registry import ModelRegistry
from bert_exporter.manifest import ExportManifest
from bert_exporter.options import packaged_model_dir

WIDTH = 4


class RecordingBackend:
    """Pooled: [sum of real ids, real length, ...]; token level: the ids themselves at real positions, zero after."""

    def __init__(self, token_level: bool):
        self.token_level = token_level
        self.calls: list[tuple[tuple[int, int], bool, list[int]]] = []

    def watch_endpoints_up(self, listener):
        listener(1)  # one Triton

    async def infer(self, input_ids, input_mask, segment_ids, *, high_priority):
        self.calls.append((input_ids.shape, high_priority, [int(m.sum()) for m in input_mask]))
        if self.token_level:
            out = np.zeros(input_ids.shape + (WIDTH,), np.float32)
            out[..., 0] = input_ids * input_mask
            return out
        real = input_mask.sum(axis=1).astype(np.float32)
        return np.stack([(input_ids * input_mask).sum(axis=1), real, real, real], axis=1).astype(np.float32)


def served_as(config) -> ModelSpec:
    """The packaged model's vocabulary with the flags' settings, as model_source.settle_model makes a ModelSpec (here
    without an export: the stand-in backend computes the rows)."""
    manifest = ExportManifest(
        target="embedded", pooling_strategy=config.pooling_strategy, pooling_layer=config.pooling_layer,
        max_seq_len=config.max_seq_len, do_lower_case=True, mask_cls_sep=False, output_dim=WIDTH,
        output_dtype="float32", max_batch_size=config.max_batch_size, max_position_embeddings=512, hidden_size=WIDTH,
        num_hidden_layers=1, source="stand-in")
    return ModelSpec(name="bert", folder=packaged_model_dir(), manifest=manifest, triton_name="bert",
                     **{flag: getattr(config, flag) for flag in MODEL_FLAGS})


def encode(flags: list[str], texts, token_level: bool = False):
    config = parse_args(flags)
    config = dataclasses.replace(config, models=(served_as(config),))
    backend = RecordingBackend(token_level)
    service = ModelRegistry.build(config, {"bert": backend}).default
    return asyncio.run(service.encode(texts)), backend, service


def sentences(count: int, seed: int = 0, most_words: int = 120) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "the quick brown fox jumps over a lazy dog while seven bright stars shine".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(1, most_words)))) for _ in range(count)]


def test_rows_come_back_in_input_order_from_length_sorted_chunks():
    texts = sentences(200)
    result, backend, service = encode(["-max_seq_len", "128"], texts)
    encodings = service.tokenizer.encode(texts)
    assert result.embeddings.shape == (200, WIDTH)
    assert result.embeddings[:, 1].tolist() == [len(e.input_ids) for e in encodings]
    assert result.embeddings[:, 0].tolist() == [sum(e.input_ids) for e in encodings]
    for (batch, length), _, real in backend.calls:
        assert batch == 1 or batch * length <= CHUNK_POSITIONS
        assert length == min(-(-max(real) // LENGTH_STEP) * LENGTH_STEP, 128)  # padded to its longest, rounded up
    # sorted chunks: each chunk's lengths lie within one range, so chunks never overlap (the point of sorting)
    ranges = sorted((min(real), max(real)) for _, _, real in backend.calls)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    # the padded positions are far fewer than with pad-to-max_seq_len on these lengths
    assert sum(b * n for (b, n), _, _ in backend.calls) < 0.7 * 200 * 128


def test_max_seq_len_only_truncates():
    result, backend, _ = encode(["-max_seq_len", "40"], ["short one", " ".join(["word"] * 100)])
    assert result.embeddings[:, 1].tolist() == [4, 40]
    assert sorted(shape for shape, _, _ in backend.calls) == [(1, 4), (1, 40)]  # apart: 4 + 40 positions, not 2 x 40
    result, backend, _ = encode(["-max_seq_len", "40"], ["short one", "another short one"])
    assert [shape for shape, _, _ in backend.calls] == [(2, 8)]

    _, backend, _ = encode(["-max_seq_len", "40", "-pad_to_max_seq_len"], ["short one", "another short one"])
    assert [shape for shape, _, _ in backend.calls] == [(2, 40)]


@pytest.mark.parametrize("flags, expected_t", [(["-max_seq_len", "40"], 40), (["-max_seq_len", "NONE"], None)])
def test_token_level_keeps_the_originals_shape_with_zero_rows(flags, expected_t):
    texts = sentences(70, seed=1, most_words=40)
    result, backend, service = encode(["-pooling_strategy", "NONE", *flags], texts, token_level=True)
    encodings = service.tokenizer.encode(texts)
    t = expected_t or service.tokenizer.batch_length(encodings)
    assert result.embeddings.shape == (70, t, WIDTH)
    assert len({shape[1] for shape, _, _ in backend.calls}) > 1  # chunks had their own lengths
    for row, e in zip(result.embeddings, encodings):
        n = len(e.input_ids)
        assert row[:n, 0].tolist() == e.input_ids
        assert not row[n:].any()


def test_small_requests_keep_their_priority():
    _, backend, _ = encode([], ["one", "two"])
    assert [high for _, high, _ in backend.calls] == [True]
    _, backend, _ = encode([], sentences(40))
    assert not any(high for _, high, _ in backend.calls)
