"""Deterministic fault injection at the trainer's hook points, for the reliability suite.

`STREAMTRAIN_FAULT` lists faults as `POINT@N[:SIGNAL]`, comma-separated: on the N-th time the
run reaches POINT, the process sends itself SIGNAL (TERM by default, KILL, or STOP: frozen
until a SIGCONT, a trainer caught mid-run; or FREEZE: only the thread that reached POINT hangs,
as a stuck read or step would). `slow@SECONDS` makes every step take that much
longer. Only the test entry point `tests/support/with_faults.py` reads it and hands the plan to
the trainer as its hooks.

    plan = FaultPlan.from_env(os.environ)   # STREAMTRAIN_FAULT="checkpoint_write@2:KILL"
    trainer.cli.main(["train", ...], hooks=plan)

Points: trainer.train.hooks.POINTS.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping

from trainer.errors import ConfigError
from trainer.train.hooks import POINTS

logger = logging.getLogger(__name__)

ENV = "STREAMTRAIN_FAULT"
# FREEZE is no signal: the thread that reached the point blocks for good (a hung read or step),
# while the rest of the process, its watchdog included, runs on.
_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "STOP": signal.SIGSTOP, "FREEZE": None}


class FaultPlan:
    def __init__(
        self,
        faults: dict[str, list[tuple[int, signal.Signals | None]]] | None = None,
        overflow_step: int = -1,
        step_delay: float = 0.0,
    ) -> None:
        self._faults = faults or {}
        self._hits: collections.Counter[str] = collections.Counter()
        # `overflow@N`: the loss of replica 1 is made non-finite at global step N (0-based).
        self.overflow_step = overflow_step
        self.step_delay = step_delay

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultPlan:
        spec = env.get(ENV, "").strip()
        faults: dict[str, list[tuple[int, signal.Signals | None]]] = {}
        overflow, delay = -1, 0.0
        for item in filter(None, (part.strip() for part in spec.split(","))):
            if item.startswith("overflow@"):
                overflow = int(item.removeprefix("overflow@"))
                continue
            if item.startswith("slow@"):
                delay = float(item.removeprefix("slow@"))
                continue
            try:
                where, _, sig = item.partition(":")
                point, _, count = where.partition("@")
                if point not in POINTS or (sig or "TERM") not in _SIGNALS:
                    raise ValueError
                faults.setdefault(point, []).append((int(count), _SIGNALS[sig or "TERM"]))
            except ValueError:
                raise ConfigError(
                    f"{ENV}: cannot parse {item!r}; expected POINT@N[:TERM|KILL|STOP|FREEZE] "
                    f"with POINT one of {', '.join(POINTS)}"
                ) from None
        if faults or overflow >= 0 or delay:
            logger.warning("fault injection armed: %s", spec)
        return cls(faults, overflow, delay)

    def reached(self, point: str) -> None:
        if point == "step" and self.step_delay:
            time.sleep(self.step_delay)
        if point not in self._faults:
            return
        self._hits[point] += 1
        for count, sig in self._faults[point]:
            if count == self._hits[point]:
                name = sig.name if sig is not None else "FREEZE"
                logger.warning("fault injection: %s at %s #%d", name, point, count)
                if sig is None:
                    threading.Event().wait()
                os.kill(os.getpid(), sig)
