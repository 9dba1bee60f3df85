"""SIGTERM sets a flag that the loop reads between steps and turns into a stop vote.

TF swallows SIGTERM in multi-worker mode, and a lone worker leaving a collective would hang
the others: the flag only marks this worker's vote, which the next compiled step sums over
every replica, so all workers stop after the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

logger = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM; read by the loop between steps."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        """Handle SIGTERM from now on; call after the strategy starts (TF installs its own)."""

        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            if self.event.is_set():
                return
            self.event.set()
            logger.warning(
                "%s received: finishing the step in flight, then checkpointing", self.signal_name
            )

        signal.signal(signal.SIGTERM, handler)

    @property
    def is_set(self) -> bool:
        return self.event.is_set()
