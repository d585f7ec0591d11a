"""Resident memory of a running service over time, per part: the bridge process, and tritonserver with its python
backend stubs (every process below the bridge), sampled once a second from /proc; and its growth after warm-up.

A restarted tritonserver is new processes below the same bridge: each sample walks the tree again.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .process_memory import descendants, rss_bytes

PARTS = ("bridge", "triton")


@dataclass(frozen=True)
class RssSample:
    t_s: float  # seconds since sampling began
    bridge_bytes: int
    triton_bytes: int  # 0 when the bridge has no children (--triton-url: Triton runs elsewhere)

    def of(self, part: str) -> int:
        return self.bridge_bytes if part == "bridge" else self.triton_bytes


class ServiceMemory:
    """``with ServiceMemory(bridge_pid) as memory: ...``; ``memory.samples`` grows once per ``period_s``."""

    def __init__(self, bridge_pid: int, period_s: float = 1.0):
        self.bridge_pid, self.period_s = bridge_pid, period_s
        self.samples: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._started = 0.0

    def __enter__(self) -> "ServiceMemory":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> RssSample | None:
        return self.samples[-1] if self.samples else None

    def _sample(self) -> None:
        while True:
            triton = sum(rss_bytes(pid) for pid in descendants(self.bridge_pid))
            self.samples.append(RssSample(time.monotonic() - self._started, rss_bytes(self.bridge_pid), triton))
            if self._stop.wait(self.period_s):
                return


def growth(samples: list[RssSample], *, warmup_s: float, window_s: float, end_s: float) -> dict:
    """Per part: the mean RSS over the first ``window_s`` after ``warmup_s`` and over the last ``window_s`` before
    ``end_s`` (MB), the relative growth between them, and the peak (MB) over the whole run."""
    first = [s for s in samples if warmup_s <= s.t_s < warmup_s + window_s]
    last = [s for s in samples if end_s - window_s < s.t_s <= end_s]
    result = {}
    for part in PARTS:
        peak = max((s.of(part) for s in samples), default=0) / 2**20
        if not first or not last or not any(s.of(part) for s in first):
            result[part] = {"first_window_mb": None, "last_window_mb": None, "growth": None, "peak_mb": peak}
            continue
        before = sum(s.of(part) for s in first) / len(first) / 2**20
        after = sum(s.of(part) for s in last) / len(last) / 2**20
        result[part] = {"first_window_mb": before, "last_window_mb": after, "growth": after / before - 1,
                        "peak_mb": peak}
    return result


def listening_pid(port: int) -> int | None:
    """The local process listening on TCP ``port`` (to find a running bridge by its -port); None if not visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in os.scandir(fd_dir):
                if os.readlink(fd.path) in targets:
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None
