"""Where a length-sorted request is cut into chunks, and the length each chunk is padded to (DESIGN.md, decision 4).

A chunk costs its padded positions (rows x padded length: onnxruntime's time per position is nearly flat in the
length on CPU) plus a fixed cost per call. ``plan_chunks`` cuts the sorted lengths where that sum is least: long runs
of similar lengths become one chunk, and a chunk ends where the next sentence would make every row in it pay for the
jump. Fixed cuts every 16 sentences wasted 7.5% of the positions on lengths spread over 5..128; this plan wastes ~3%.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bert_exporter.triton_config import POSITIONS_PER_RUN

# Chunks are padded to a multiple of this: at most 3 wasted positions per row, and few enough shapes that equal-shape
# chunks of small concurrent requests still meet in Triton's batcher, whose merged chunks the embedded model runs
# together (templates/model.py). The plan below mostly cuts where a multiple of 4 ends, so it costs little.
LENGTH_STEP = 4
# Token positions per chunk at most (a single longer sentence goes alone; the service also caps its rows): the fp32
# embedded export's positions_per_run, the call size that stays in the CPU's caches (templates/model.py), so a chunk
# is one onnxruntime call and every chunk takes about the same time -- the unit in which the scheduler interleaves
# clients (scheduler.py). int8 exports run two such chunks of one shape per call.
CHUNK_POSITIONS = POSITIONS_PER_RUN[None]
# The fixed cost of one chunk, in positions' worth of time: one onnxruntime call costs ~4.5 ms beside ~140 us per
# position on a 2-core Zen 4 (a fit over calls of 16 to 512 positions), and a Triton request adds little to that.
CALL_COST_POSITIONS = 32


@dataclass(frozen=True)
class Chunk:
    start: int  # index into the length-sorted order
    stop: int
    length: int  # padded length

    @property
    def rows(self) -> int:
        return self.stop - self.start


def padded_length(longest: int, cap: int) -> int:
    """``longest`` rounded up to a multiple of LENGTH_STEP, at most ``cap``."""
    return min(-(-longest // LENGTH_STEP) * LENGTH_STEP, cap)


def plan_chunks(sorted_lengths: Sequence[int], *, cap: int, max_rows: int) -> list[Chunk]:
    """Chunks covering ``sorted_lengths`` (ascending token counts) in order, each of at most ``max_rows`` rows and
    CHUNK_POSITIONS padded positions (or one row), with the least padded positions plus CALL_COST_POSITIONS per
    chunk: a dynamic programme over the cut points, O(n x rows per chunk) in numpy."""
    count = len(sorted_lengths)
    padded = [padded_length(length, cap) for length in sorted_lengths]
    best = np.zeros(count + 1)  # best[j]: least cost of the first j sentences
    cut = np.zeros(count + 1, dtype=np.int64)  # cut[j]: where the last chunk of that best plan starts
    for stop in range(1, count + 1):
        length = padded[stop - 1]  # sorted: a chunk ending here is padded to this
        rows = max(1, min(max_rows, CHUNK_POSITIONS // length))
        first = max(0, stop - rows)
        costs = best[first:stop] + (stop - np.arange(first, stop)) * length + CALL_COST_POSITIONS
        start = int(np.argmin(costs))
        best[stop], cut[stop] = costs[start], first + start
    chunks, stop = [], count
    while stop > 0:
        start = int(cut[stop])
        chunks.append(Chunk(start, stop, padded[stop - 1]))
        stop = start
    return chunks[::-1]
