"""Logging for the trainer process: one line per record with UTC time, level and message.

    setup_logging(verbosity=0)   # -1 warnings only, 0 info, 1 debug (ours), 2 debug (all)
    logging.getLogger(__name__).info("epoch %d done", 3)
    # 2025-01-31T12:00:00.123Z INFO epoch 3 done
    if is_tty(): ...             # progress bar; else one line every --log-every steps

Call `setup_logging` before importing TensorFlow: it sets TF_CPP_MIN_LOG_LEVEL, which TF's
C++ runtime reads once at import.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

# Libraries whose debug output drowns ours (every HTTP request); shown only at -vv.
_CHATTY = ("urllib3", "google", "google_auth_httplib2", "kubernetes", "absl", "PIL")


class _Handler(logging.StreamHandler):
    """Marks the handler we installed, so a second setup replaces it instead of adding one."""


def setup_logging(verbosity: int = 0, *, stream: TextIO | None = None) -> None:
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
