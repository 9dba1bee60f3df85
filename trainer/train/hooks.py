"""Named points of a run where a test may act; production runs pass none and nothing happens.

    class Plan:
        def reached(self, point: str) -> None: ...
    trainer.cli.main(["train", ...], hooks=Plan())   # tests/support/with_faults.py

Points: `step` (after each training step), `input` (in the feed, as it asks for a batch,
on TensorFlow's generator thread), `epoch_end` (after an epoch's metrics), `eval`
(as evaluation starts), `checkpoint_write` (between a checkpoint's weights and its COMMITTED
marker), `export` (between `model.keras` and the SavedModel).
"""

from __future__ import annotations

from typing import Protocol

POINTS = ("step", "input", "epoch_end", "eval", "checkpoint_write", "export")


class Hooks(Protocol):
    # A global step at which replica 1's loss is made non-finite (-1: never), to test that
    # an overflow is skipped on every replica alike.
    overflow_step: int

    def reached(self, point: str) -> None: ...


class NoHooks:
    """The production seam: every point passes untouched."""

    overflow_step = -1

    def reached(self, point: str) -> None:
        del point
