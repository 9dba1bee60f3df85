"""Progress, images/s and ETA for the launcher, read from the chief's JSON log lines.

The trainer's Job logs one JSON object per line (TRAINER_LOG_FORMAT=json). Its progress lines
carry `epoch`, `epochs`, `step`, `steps`, `global_step`, `total_steps`, `images_per_s`,
`data_wait_fraction` and `eta_s`; its epoch lines `epoch`, `epochs`, `images_per_s`,
`data_wait_fraction` and, with a validation split, `val_accuracy`.

    progress = Progress(every_s=60, emit=print)
    progress.read(line)          # from worker 0's log stream (any thread)
    progress.tick()              # from the follower's loop: a line every 60 s, if there is news
    progress.finish(ended=True)  # the last line
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

# A line is the trainer's progress or epoch line when it has all of these fields.
PROGRESS_KEYS = frozenset({"epoch", "step", "steps", "images_per_s", "data_wait_fraction"})
EPOCH_KEYS = frozenset({"epoch", "loss", "images_per_s", "data_wait_fraction"})


def fields_of(line: str) -> dict[str, Any] | None:
    """The JSON object a log line is, or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def duration(seconds: float) -> str:
    """`0:57:10`, `1 day, 2:03:04`."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """The chief's latest figures, and the `progress:` lines made of them."""

    def __init__(
        self,
        *,
        every_s: float,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.emit = emit
        self.clock = clock
        self.lock = threading.Lock()
        self.figures: dict[str, Any] = {}
        self.news = False
        self.last_print = clock()

    def read(self, line: str) -> None:
        """Takes the figures of one of the chief's log lines, if it is a progress or epoch line."""
        entry = fields_of(line)
        if entry is None:
            return
        keys = entry.keys()
        if keys >= PROGRESS_KEYS:
            taken = {k: entry[k] for k in PROGRESS_KEYS}
            for key in ("epochs", "global_step", "total_steps", "eta_s"):
                if key in entry:
                    taken[key] = entry[key]
        elif keys >= EPOCH_KEYS and "step" not in keys:
            taken = {k: entry[k] for k in ("images_per_s", "data_wait_fraction")}
            if "val_accuracy" in entry:
                taken |= {"val_accuracy": entry["val_accuracy"], "val_epoch": entry["epoch"]}
        else:
            return
        with self.lock:
            self.figures.update(taken)
            self.news = True

    def line(self, *, ended: bool = False) -> str | None:
        """`progress: epoch 3/10, step 1200/4000 (30%), 812 images/s, data-wait 4%, ETA 0:57:10`;
        without the ETA, and `progress at the end:`, once the run has ended."""
        with self.lock:
            f = dict(self.figures)
        if not f:
            return None
        try:
            parts = [f"epoch {f['epoch']}" + (f"/{f['epochs']}" if "epochs" in f else "")]
            if "global_step" in f and "total_steps" in f:
                done = f["global_step"] / max(f["total_steps"], 1)
                parts.append(f"step {f['global_step']}/{f['total_steps']} ({done:.0%})")
            else:
                parts.append(f"step {f['step']}/{f['steps']} of the epoch")
            rate = float(f["images_per_s"])
            parts.append(f"{rate:.0f} images/s" if rate >= 100 else f"{rate:.1f} images/s")
            parts.append(f"data-wait {float(f['data_wait_fraction']):.0%}")
            if "val_accuracy" in f:
                parts.append(f"val_accuracy {f['val_accuracy']:.4f} (epoch {f['val_epoch']})")
            if "eta_s" in f and not ended:
                parts.append(f"ETA {duration(float(f['eta_s']))}")
        except (KeyError, TypeError, ValueError):
            # Fields of another shape (a different trainer version): no line rather than a crash.
            return None
        return ("progress at the end: " if ended else "progress: ") + ", ".join(parts)

    def tick(self) -> None:
        """Emits a progress line when `every_s` has passed and new figures came since the last."""
        if self.every_s <= 0 or self.clock() - self.last_print < self.every_s:
            return
        with self.lock:
            news, self.news = self.news, False
        if not news:
            return
        self.last_print = self.clock()
        text = self.line()
        if text:
            self.emit(text)

    def finish(self, *, ended: bool) -> None:
        """The last line: the final figures (`ended`: the Job is over, so no ETA)."""
        if self.every_s <= 0:
            return
        text = self.line(ended=ended)
        if text:
            self.emit(text)
