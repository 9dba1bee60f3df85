"""Local files for Storage: atomic writes, reads, removals, tree swaps; errors translated."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TypeVar

from trainer.errors import (
    DataError,
    StorageNotFoundError,
    StoragePermissionError,
    write_error,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


def local_call(path: str, action: str, fn: Callable[[], T]) -> T:
    """Run a local file operation, turning OS errors into one-line trainer errors."""
    try:
        return fn()
    except FileNotFoundError as exc:
        raise StorageNotFoundError(
            f"{path}: no such file or directory (trying to {action})"
        ) from exc
    except PermissionError as exc:
        raise StoragePermissionError(
            f"{path}: permission denied (trying to {action}); check the file's owner and mode"
        ) from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, expected a file (trying to {action})") from exc
    except NotADirectoryError as exc:
        raise DataError(f"{path}: a parent is a file, not a directory ({action})") from exc
    except OSError as exc:  # a read-only or full disk; other OS errors stay bugs
        error = write_error(exc, path)
        if error is None:
            raise
        raise error from exc


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_file(path: str, data: bytes) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # Temp file in the same directory so os.replace is an atomic rename on one filesystem.
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def replace_tree(src: str, dst: str) -> None:
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dst)}.")
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if os.path.isdir(dst):
            old = tmp + ".old"
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
