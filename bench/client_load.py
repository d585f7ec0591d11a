"""The original's client side: ``num_client`` concurrent BertClients, each encoding the same batch ``repeats`` times.

Each client's first request is a warm-up and not counted; throughput is counted sentences over the wall time of the
counted requests, latency per request.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    sentences_per_s: float
    latencies_s: list[float]
    errors: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None  # the first client's last reply, to compare vectors across settings

    def percentile_ms(self, q: float) -> float:
        return 1000 * float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


def run_load(port: int, port_out: int, sentences: list[str], *, num_client: int, repeats: int,
             ip: str = "localhost", timeout_ms: int = 600_000) -> LoadResult:
    from bert_serving.client import BertClient

    latencies: list[float] = []
    errors: list[str] = []
    replies: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    warmed = threading.Barrier(num_client + 1)

    def client(index: int) -> None:
        try:
            with BertClient(ip=ip, port=port, port_out=port_out, timeout=timeout_ms, check_length=False) as bc:
                bc.encode(sentences)  # warm-up
                warmed.wait()
                for _ in range(repeats):
                    start = time.perf_counter()
                    reply = bc.encode(sentences)
                    with lock:
                        latencies.append(time.perf_counter() - start)
                replies[index] = reply
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # reported with the setting; the sweep goes on
            errors.append(f"{type(e).__name__}: {e}")
            warmed.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(num_client)]
    for thread in threads:
        thread.start()
    try:
        warmed.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    counted = len(latencies) * len(sentences)
    return LoadResult(sentences_per_s=counted / elapsed if latencies else 0.0, latencies_s=latencies, errors=errors,
                      vectors=replies.get(0))
