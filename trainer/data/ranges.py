"""Byte ranges of local files, checked against an index: how packed samples are read, by the
trainer's threads and by the decode processes alike."""

from __future__ import annotations

import os

import google_crc32c

from trainer.data.decode import ImageDecodeError


def read_range(path: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of the file, -1 all of it (pread: no shared file position)."""
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size, offset) if size >= 0 else f.read()


def read_checked(
    path: str, offset: int, size: int, crc32c: int | None = None, *, name: str | None = None
) -> bytes:
    """`read_range`, and ImageDecodeError "truncated" when the file ends inside the range or
    "corrupt" when the bytes differ from `crc32c`; `name` (default `path`) is what errors say.
    OS errors are raised as they are."""
    data = read_range(path, offset, size)
    if size < 0:
        return data
    name = name or path
    if len(data) != size:
        raise ImageDecodeError("truncated", f"{name} ends {size - len(data)} bytes early")
    if crc32c is not None and google_crc32c.value(data) != crc32c:
        raise ImageDecodeError(
            "corrupt", f"crc32c mismatch: the bytes in {name} differ from the index"
        )
    return data
