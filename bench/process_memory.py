"""Peak resident memory of a whole process tree (bridge + tritonserver + python backend stub), sampled from /proc."""
from __future__ import annotations

import os
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(root: int) -> set[int]:
    """Every living process below ``root``: children, grandchildren (tritonserver's python stubs), ... Zombies are
    not counted: they hold no memory and are as good as gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def rss_bytes(pid: int) -> int:
    """RSS of one process now; 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(root: int) -> int:
    """Sum of RSS over ``root`` and every descendant alive now."""
    return sum(rss_bytes(pid) for pid in {root} | descendants(root))


class PeakRss:
    """``with PeakRss(pid) as peak: ...`` then ``peak.bytes``: the largest tree RSS seen, sampled every ``period_s``."""

    def __init__(self, root: int, period_s: float = 0.25):
        self.root, self.period_s, self.bytes = root, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.bytes = max(self.bytes, tree_rss_bytes(self.root))
            if self._stop.wait(self.period_s):
                return
