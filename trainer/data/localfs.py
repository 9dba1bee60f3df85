"""Local files for Storage: atomic writes, reads, removals, trees; errors translated.

Files and folders written here get the modes a plain open() or mkdir would give them (0666 and
0777 less the process umask), not the 0600/0700 of the temporary names they are written under:
a serving process of another user must be able to read model.keras.
"""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def process_umask() -> int:
    """The process's umask, read without changing it.

    Linux reports it in /proc/self/status. Elsewhere it is read by setting and restoring it,
    which a file created by another thread in between would get: cached, so that happens once.
    """
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as f,
    ):
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
            os.fchmod(f.fileno(), 0o666 & ~process_umask())  # mkstemp's 0600 otherwise
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def place_tree(src: str, dst: str) -> None:
    """Copy the tree `src` to `dst`: a new `dst` is renamed into place whole; into an existing
    one each file is written atomically over its own name, and nothing else there is touched."""
    if os.path.isdir(dst):
        for path in _files(src):
            write_file(os.path.join(dst, os.path.relpath(path, src)), read_file(path))
        return
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dst)}.")
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o777 & ~process_umask())  # mkdtemp's 0700, or the source's mode
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary copy made above, only
        raise


def _files(root: str) -> list[str]:
    return sorted(os.path.join(d, name) for d, _, names in os.walk(root) for name in names)
