"""`Quarantine`: the objects a Sequence found unreadable, by the --on-corrupt policy.

    quarantine = Quarantine("skip", storage=storage, counters=counters, report_uri=uri)
    quarantine.reject(uri, error)   # "fail": raises DataError; "skip": recorded, report rewritten
    uri in quarantine               # known bad: go straight to a replacement

The report is JSON lines, one per object (`uri`, `reason`, `message`), rewritten whole.
"""

from __future__ import annotations

import json
import logging
import threading

from trainer.data.counters import Counters
from trainer.data.storage import Storage
from trainer.errors import DataError

logger = logging.getLogger(__name__)

CORRUPT_POLICIES = ("skip", "fail")


class Quarantine:
    """Unreadable objects, by URI; thread-safe."""

    def __init__(
        self,
        policy: str,
        *,
        storage: Storage,
        counters: Counters,
        report_uri: str | None = None,
    ) -> None:
        if policy not in CORRUPT_POLICIES:
            raise ValueError(f"on_corrupt must be one of {CORRUPT_POLICIES}, got {policy!r}")
        self.policy = policy
        self.storage = storage
        self.counters = counters
        self.report_uri = report_uri
        self._records: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def __contains__(self, uri: str) -> bool:
        return uri in self._records

    @property
    def records(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._records.values())

    def reject(self, uri: str, error: Exception) -> None:
        """An unreadable object: fail the run, or record it (by the policy)."""
        if self.policy == "fail":
            raise DataError(
                f"{uri}: unreadable image ({error}); fix or remove it, or "
                "use --on-corrupt skip to quarantine it"
            ) from None
        reason = getattr(error, "reason", "not_found")
        # One lock around update and write: reports are rewritten whole, never out of order.
        with self._lock:
            if uri in self._records:
                return
            self._records[uri] = {"uri": uri, "reason": reason, "message": str(error)}
            report = "".join(json.dumps(r) + "\n" for r in self._records.values())
            self.counters.add("skipped")
            logger.warning(
                "skipping %s (%s); a replacement from the same shard takes its place", uri, reason
            )
            if self.report_uri:
                self.storage.write(self.report_uri, report.encode())
