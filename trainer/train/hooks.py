"""Named points of a run where a test may act; production runs pass none and nothing happens.

    class Plan:
        def reached(self, point: str) -> None: ...
    trainer.cli.main(["train", ...], hooks=Plan())   # tests/support/with_faults.py

Points: `step` (after each training step), `epoch_end` (after an epoch's metrics), `eval`
(as evaluation starts), `checkpoint_write` (between a checkpoint's weights and its COMMITTED
marker), `export` (between `model.keras` and the SavedModel).
"""

from __future__ import annotations

from typing import Protocol

POINTS = ("step", "epoch_end", "eval", "checkpoint_write", "export")


class Hooks(Protocol):
    def reached(self, point: str) -> None: ...


class NoHooks:
    """The production seam: every point passes untouched."""

    def reached(self, point: str) -> None:
        del point
