"""Request statistics with the original's ``statistic`` fields (SHOW_STATUS; shared/reference/original-server-semantics.md).

Counters: num_data_request, num_total_seq, num_sys_request, num_total_request, num_total_client, num_active_client
(a request within the last 180 s). For each of request_per_client, size_per_request, last_two_interval and
request_per_second: avg_/min_/max_/num_min_/num_max_ keys, omitted while there is no data.
"""
from __future__ import annotations

import time
from collections import Counter, deque

ACTIVE_CLIENT_WINDOW_S = 180
INTERVAL_HISTORY = 200


def _summary(name: str, values, average=None) -> dict:
    values = list(values)
    if not values:
        return {}
    low, high = min(values), max(values)
    return {
        f"avg_{name}": average if average is not None else sum(values) / len(values),
        f"min_{name}": low,
        f"max_{name}": high,
        f"num_min_{name}": sum(v == low for v in values),
        f"num_max_{name}": sum(v == high for v in values),
    }


class ServerStatistic:
    """Not thread-safe: updated and read on the bridge's event loop only."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._requests_per_client: Counter = Counter()
        self._last_active: dict = {}
        self._sizes: Counter = Counter()
        self._intervals: deque = deque(maxlen=INTERVAL_HISTORY)
        self._last_data_request = clock()
        self.num_data_request = 0
        self.num_sys_request = 0
        self.num_total_seq = 0

    def record_command(self, identity: bytes) -> None:
        self._requests_per_client[identity] += 1
        self.num_sys_request += 1

    def record_data(self, identity: bytes, num_sentences: int) -> None:
        now = self._clock()
        self._requests_per_client[identity] += 1
        self._last_active[identity] = now
        self._sizes[num_sentences] += 1
        self.num_data_request += 1
        self.num_total_seq += num_sentences
        self._intervals.append(now - self._last_data_request)
        self._last_data_request = now

    def value(self) -> dict:
        now = self._clock()
        sizes_total = sum(self._sizes.values())
        average_size = sum(size * n for size, n in self._sizes.items()) / sizes_total if sizes_total else None
        stats = {
            "num_data_request": self.num_data_request,
            "num_total_seq": self.num_total_seq,
            "num_sys_request": self.num_sys_request,
            "num_total_request": self.num_data_request + self.num_sys_request,
            "num_total_client": len(self._requests_per_client),
            "num_active_client": sum(now - t < ACTIVE_CLIENT_WINDOW_S for t in self._last_active.values()),
        }
        stats.update(_summary("request_per_client", self._requests_per_client.values()))
        stats.update(_summary("size_per_request", self._sizes.keys(), average_size))
        stats.update(_summary("last_two_interval", self._intervals))
        stats.update(_summary("request_per_second", [1.0 / v for v in self._intervals if v > 0]))
        return stats
