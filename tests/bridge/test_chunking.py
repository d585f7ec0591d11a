"""The chunk plan of a length-sorted request (bridge/core/chunking.py), against brute force over every way to cut it."""
from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings, strategies as st

from bert_bridge.core.chunking import CALL_COST_POSITIONS, CHUNK_POSITIONS, plan_chunks, padded_length


def cost(cuts: list[tuple[int, int]], lengths: list[int], cap: int) -> int:
    return sum((stop - start) * padded_length(lengths[stop - 1], cap) + CALL_COST_POSITIONS for start, stop in cuts)


def allowed(start: int, stop: int, lengths: list[int], cap: int, max_rows: int) -> bool:
    rows = stop - start
    return rows == 1 or (rows <= max_rows and rows * padded_length(lengths[stop - 1], cap) <= CHUNK_POSITIONS)


def brute_force_least_cost(lengths: list[int], cap: int, max_rows: int) -> int:
    n, best = len(lengths), None
    for mask in itertools.product((False, True), repeat=n - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(mask) if cut] + [n]
        cuts = list(zip(bounds, bounds[1:]))
        if all(allowed(a, b, lengths, cap, max_rows) for a, b in cuts):
            total = cost(cuts, lengths, cap)
            best = total if best is None else min(best, total)
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=1, max_size=11), st.sampled_from([128, 512]), st.integers(1, 12))
def test_the_plan_covers_the_request_in_order_within_limits_at_least_cost(raw, cap, max_rows):
    lengths = sorted(min(length, cap) for length in raw)
    plan = plan_chunks(lengths, cap=cap, max_rows=max_rows)

    assert [c.start for c in plan] == [0] + [c.stop for c in plan[:-1]] and plan[-1].stop == len(lengths)
    for chunk in plan:
        assert chunk.length == padded_length(max(lengths[chunk.start:chunk.stop]), cap)  # its longest, rounded up
        assert chunk.length >= max(lengths[chunk.start:chunk.stop])  # nothing truncated by the padding
        assert allowed(chunk.start, chunk.stop, lengths, cap, max_rows)
    assert cost([(c.start, c.stop) for c in plan], lengths, cap) == brute_force_least_cost(lengths, cap, max_rows)


def test_mixed_lengths_waste_little_padding_and_equal_ones_fill_whole_chunks():
    lengths = sorted(np.random.default_rng(0).integers(5, 129, size=1000).tolist())
    plan = plan_chunks(lengths, cap=128, max_rows=256)
    padded = sum(c.rows * c.length for c in plan)
    assert padded <= 1.05 * sum(lengths)  # cuts every 16 sentences padded 7.5% more than the tokens

    plan = plan_chunks([40] * 256, cap=128, max_rows=256)
    assert sorted(c.rows for c in plan) == [6] + [CHUNK_POSITIONS // 40] * 10
    assert {c.length for c in plan} == {40}
    plan = plan_chunks([128] * 20, cap=128, max_rows=4)  # -max_batch_size bounds a chunk's rows
    assert [c.rows for c in plan] == [4] * 5


def test_long_documents_go_one_per_chunk_measured_in_positions():
    """A request of 64 documents of ~8,000 tokens (a long-context model's) beside short sentences: no chunk holds two
    documents, and the short sentences still share chunks."""
    lengths = sorted([5, 9, 12, 40, 41, 100] + [7_990 + i for i in range(64)])
    chunks = plan_chunks(lengths, cap=8_192, max_rows=128)
    assert [c.stop for c in chunks[:-1]] == [c.start for c in chunks[1:]] and chunks[-1].stop == len(lengths)
    long_chunks = [c for c in chunks if c.length > CHUNK_POSITIONS]
    assert len(long_chunks) == 64 and all(c.rows == 1 for c in long_chunks)
    assert len(chunks) < len(lengths)  # the short ones were grouped
    assert all(c.rows * c.length <= CHUNK_POSITIONS for c in chunks if c.rows > 1)
