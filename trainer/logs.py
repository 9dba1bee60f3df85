"""Logging for the trainer process: one line per record with UTC time, level and message.

    setup_logging(verbosity=0)   # -1 warnings only, 0 info, 1 debug (ours), 2 debug (all)
    logging.getLogger(__name__).info("epoch %d done", 3, extra={"fields": {"epoch": 3}})
    # 2025-01-31T12:00:00.123Z INFO epoch 3 done
    setup_logging(0, fmt="json")
    # {"time": "2025-01-31T12:00:00.123Z", "severity": "INFO", "message": "epoch 3 done",
    #  "logger": "trainer.train.metrics", "epoch": 3}

JSON lines are what GKE's logging agent turns into structured Cloud Logging entries:
`severity` sets the entry's level and the other keys land in its jsonPayload.
    if is_tty(): ...             # progress bar; else one line every --log-every steps

Call `setup_logging` before importing TensorFlow: it sets TF_CPP_MIN_LOG_LEVEL, which TF's
C++ runtime reads once at import.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

# Libraries whose debug output drowns ours (every HTTP request); shown only at -vv.
_CHATTY = ("urllib3", "google", "google_auth_httplib2", "kubernetes", "absl", "PIL")


class _Handler(logging.StreamHandler):
    """Marks the handler we installed, so a second setup replaces it instead of adding one."""


def _utc(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, severity, message, logger, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record),
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def error_line(message: str, fmt: str) -> str:
    """The one line a failed run ends with: `error: ...`, or its JSON form."""
    if fmt == "json":
        return json.dumps({"severity": "ERROR", "message": f"error: {message}"}) + "\n"
    return f"error: {message}\n"


def setup_logging(verbosity: int = 0, *, stream: TextIO | None = None, fmt: str = "text") -> None:
    """Configure the root logger; safe to call again (it replaces its own handler only)."""
    # "2" hides TF's C++ INFO and WARNING lines (CUDA probing, oneDNN notices); errors remain.
    # A value the user exported wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbosity < 0:
        level = logging.WARNING
    elif verbosity == 0:
        level = logging.INFO
    else:
        level = logging.DEBUG
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        formatter.converter = time.gmtime
        formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
        formatter.default_msec_format = "%s.%03dZ"
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(
            logging.NOTSET if verbosity >= 2 else max(level, logging.INFO)
        )


def is_tty() -> bool:
    """Whether stdout is an interactive terminal (False when closed, piped or in a pod)."""
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (ValueError, AttributeError):  # closed or replaced by something without isatty
        return False
