"""Thread-safe counters that the input pipeline updates and callers read.

counters = Counters()
counters.add("objects_fetched")
counters.add("fetch_seconds", 0.012)
counters.snapshot()  # {"objects_fetched": 1, "fetch_seconds": 0.012, ...}
"""

from __future__ import annotations

import threading

# Names every pipeline reports, so a snapshot always has them even when zero.
STANDARD = (
    "objects_fetched",
    "bytes_fetched",
    "fetch_seconds",
    "decode_seconds",
    "wait_seconds",
    "retries",
    "skipped",
    "cache_hits",
    "cache_misses",
)


class Counters:
    """A dict of numbers behind one lock; cheap enough for per-object updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(STANDARD, 0)

    def add(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + value

    def get(self, name: str) -> float:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        with self._lock:
            self._values = dict.fromkeys(STANDARD, 0)
