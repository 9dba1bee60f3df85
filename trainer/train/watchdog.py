"""Ends a run in which nothing moves: no step, evaluation or checkpoint finished for too long.

A hung read or step would otherwise hold the GPUs until the Job's deadline. The limit is
`--stall-timeout-s`, raised to 5 times the slowest interval seen between two marks (the first
chunk, which compiles, included), so a slow model is never taken for a stuck one. The loop
marks progress and names what it does; the feed says when it waits for the input pipeline. A
stall cannot be interrupted from Python (the main thread is inside TensorFlow), so the
watchdog writes the one-line error itself and ends the process with exit code 7; the restart
resumes from the last checkpoint.

    watchdog = Watchdog(1800, where_input=lambda: feed.waiting_since, multi_worker=False,
                        log_format="text")
    watchdog.start()
    watchdog.mark("step")          # after each chunk; "evaluation", "checkpoint" before those
    watchdog.close()
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from trainer.errors import ExitCode
from trainer.logs import error_line

logger = logging.getLogger(__name__)

SLOWEST_FACTOR = 5.0


def _exit(message: str, fmt: str) -> None:
    logging.shutdown()
    sys.stderr.write(error_line(message, fmt))
    sys.stderr.flush()
    os._exit(int(ExitCode.STALLED))


class Watchdog:
    """A daemon thread that ends the process when no mark came within the limit."""

    def __init__(
        self,
        timeout_s: float,
        *,
        waiting_since: Callable[[], float | None],
        multi_worker: bool,
        log_format: str,
        on_stall: Callable[[str, str], None] = _exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self._waiting_since = waiting_since
        self._multi_worker = multi_worker
        self._fmt = log_format
        self._on_stall = on_stall
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._doing = "step"
        self._step = 0
        self._slowest = 0.0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def mark(self, doing: str, *, step: int | None = None) -> None:
        """Progress: the previous activity ended and `doing` ("step", "evaluation", ...) begins."""
        with self._lock:
            now = self._clock()
            self._slowest = max(self._slowest, now - self._last)
            self._last, self._doing = now, doing
            if step is not None:
                self._step = step

    def limit(self) -> float:
        """The seconds without a mark that count as a stall."""
        with self._lock:
            return max(self.timeout_s, SLOWEST_FACTOR * self._slowest)

    def where(self) -> str:
        """What the run is stuck on, as the error line says it."""
        with self._lock:
            doing = self._doing
        since = self._waiting_since()
        if since is not None and self._clock() - since >= 0.5 * (self._clock() - self._last):
            return f"waiting for input (the {doing}'s batch has not come from the input pipeline)"
        if doing == "step" and self._multi_worker:
            return "in the step, or in a collective waiting for another worker"
        return {
            "step": "in the step (computing on the device)",
            "evaluation": "in the evaluation",
            "checkpoint": "writing a checkpoint",
        }.get(doing, f"in the {doing}")

    def check(self) -> str | None:
        """The error message when stalled now, else None."""
        with self._lock:
            idle, step = self._clock() - self._last, self._step
        limit = self.limit()
        if idle < limit:
            return None
        return (
            f"stalled: nothing finished for {idle:.0f} s after step {step} (limit {limit:.0f} s: "
            f"--stall-timeout-s {self.timeout_s:g}, or 5x the slowest step seen); stuck "
            f"{self.where()}; restart the job, it resumes from the last checkpoint"
        )

    def _watch(self) -> None:
        period = min(5.0, max(0.2, self.timeout_s / 10))
        while not self._closed.wait(period):
            message = self.check()
            if message is not None:
                self._on_stall(message, self._fmt)
                return


def start_watchdog(config: Any, feed: Any, *, multi_worker: bool) -> Watchdog:
    """The watchdog, running unless --stall-timeout-s is 0."""
    watchdog = Watchdog(
        config.stall_timeout_s,
        waiting_since=lambda: feed.waiting_since,
        multi_worker=multi_worker,
        log_format=config.log_format,
    )
    if config.stall_timeout_s:
        watchdog.start()
    return watchdog
