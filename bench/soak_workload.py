"""The soak's workload: a fixed pool of distinct sentences, and for each client a fixed-seed stream of requests.

A request is an array of indices into the pool (sentences repeat across requests, so one reference vector per distinct
sentence checks them all). Its size is drawn from ``SIZE_CLASSES``: 1 to 5,000 sentences, weighted toward small
requests so that a 10-minute run on a CPU server finishes many requests, yet every class, the largest included, is
drawn several times. Within a class, sizes are log-uniform. The same seed gives the same requests in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

SENTENCE_TOKENS = (3, 40)  # the server's default max_seq_len (25) truncates the longer ones: truncation is soaked too


@dataclass(frozen=True)
class SizeClass:
    name: str
    smallest: int
    largest: int
    weight: float


SIZE_CLASSES = (
    SizeClass("1-16", 1, 16, 0.70),
    SizeClass("17-256", 17, 256, 0.22),
    SizeClass("257-1024", 257, 1024, 0.06),
    SizeClass("1025-5000", 1025, 5000, 0.02),
)


def size_class_of(size: int) -> str:
    for size_class in SIZE_CLASSES:
        if size <= size_class.largest:
            return size_class.name
    return SIZE_CLASSES[-1].name


class RequestPlan:
    """Request sizes capped at ``max_sentences``: the classes above the cap are left out, the one it cuts shrinks."""

    def __init__(self, *, pool_size: int, max_sentences: int, seed: int):
        self.pool_size, self.seed = pool_size, seed
        self.classes = [SizeClass(c.name, c.smallest, min(c.largest, max_sentences), c.weight)
                        for c in SIZE_CLASSES if c.smallest <= max_sentences]
        weights = np.array([c.weight for c in self.classes])
        self.weights = weights / weights.sum()

    def requests(self, client_index: int) -> Iterator[np.ndarray]:
        """Client ``client_index``'s endless stream of requests (pool indices), the same for the same seed."""
        rng = np.random.default_rng([self.seed, client_index])
        while True:
            size_class = self.classes[int(rng.choice(len(self.classes), p=self.weights))]
            low, high = np.log(size_class.smallest), np.log(size_class.largest + 1)
            size = min(size_class.largest, int(np.exp(rng.uniform(low, high))))
            yield rng.integers(self.pool_size, size=max(size, size_class.smallest))


def sentence_pool(vocab_file: Path, words_file: Path | None, count: int, seed: int) -> list[str]:
    """``count`` distinct sentences of 3 to 40 tokens, words from ``words_file`` (bert_bench.workload's maker)."""
    from .workload import SentenceMaker

    maker = SentenceMaker(vocab_file, words_file, seed=seed)
    pool: dict[str, None] = {}
    while len(pool) < count:
        pool.update(dict.fromkeys(maker.mixed(count - len(pool), *SENTENCE_TOKENS)))
    return list(pool)
