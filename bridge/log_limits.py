"""Rate-limited logging of client faults: a flood of bad requests must not fill the disk.

Each kind of fault (a malformed frame count, invalid JSON, a request over a limit, ...) gets at most one log line per
``interval_s``; the lines that were held back in between are counted and named in the next line of that kind.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

DEFAULT_INTERVAL_S = 10.0


class RateLimitedLog:
    """``warning(kind, message, *args)`` logs at most once per ``interval_s`` per kind, counting what it suppressed."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last_logged: dict[str, float] = {}  # kinds are a closed set of names chosen by the bridge, not clients
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than ``interval_s`` ago; True when it was logged."""
        now = self._clock()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last_logged[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (and %d more of this kind in the last %.0fs, not logged)"
            args = (*args, suppressed, now - last)
        self.logger.warning(message, *args)
        return True
