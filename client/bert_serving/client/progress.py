"""The optional progress bar of large encodes: tqdm when it is installed, else one self-updating line on stderr.

tqdm is imported only when a bar is asked for, so ``import bert_serving.client`` stays light.
"""
from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["NoProgress", "make_progress"]


class NoProgress:
    """The default: counts nothing, prints nothing."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _LineProgress:
    """Fallback when tqdm is missing: ``sentences done/total, sentences/s`` rewritten in place on stderr."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(f"\rencoding: {self.done}/{self.total} sentences, {self.done / elapsed:.0f} sentences/s")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def make_progress(total: int, *, enabled: bool) -> Any:
    """A bar with ``update(n)`` and ``close()`` counting sentences; a silent one unless ``enabled``."""
    if not enabled:
        return NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _LineProgress(total)
    return tqdm(total=total, unit="sentences", unit_scale=True, desc="encoding")
