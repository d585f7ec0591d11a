"""Paired measurement: contenders take turns on the same sentences, so a shared machine's noise hits each alike.

Measuring A for a minute and then B for a minute compares two different machines when other work comes and goes
(docs/PERFORMANCE.md saw the same setting range from 77 to 146 sentences/s within one run). Here every contender
encodes once to warm up, then each round every contender encodes the same sentences once, the order rotating from
round to round. A contender's speed is its sentences per call over its median call time: on this 2-vCPU virtual
machine the interference comes in bursts that make a whole call up to twice as slow (seen on the service and on
onnxruntime in process alike, with no process of ours busy), and the median of several rounds is what stays put.
Contenders that are servers stay up side by side and idle while the others are measured.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from .client_load import LoadResult
from .server_process import RunningServer

Encode = Callable[[list], np.ndarray]


def take_turns(contenders: dict[str, Encode], sentences: list[str], rounds: int) -> dict[str, LoadResult]:
    names = list(contenders)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    vectors: dict[str, np.ndarray] = {}
    for name in names:
        vectors[name] = contenders[name](sentences)  # warm-up
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            vectors[name] = contenders[name](sentences)
            latencies[name].append(time.perf_counter() - start)
    return {name: LoadResult(sentences_per_s=len(sentences) / float(np.median(latencies[name])),
                             latencies_s=latencies[name], vectors=np.asarray(vectors[name]))
            for name in names}


@contextmanager
def service_encoder(server: RunningServer, ip: str = "localhost", timeout_ms: int = 600_000) -> Iterator[Encode]:
    """``encode`` of one of our clients connected to ``server``."""
    from bert_serving.client import BertClient

    with BertClient(ip=ip, port=server.port, port_out=server.port_out, timeout=timeout_ms,
                    check_length=False) as client:
        yield client.encode
