"""A decode process: image bytes in, pixels out into shared memory; `DecodePool` starts these.

    python -m trainer.data.decode_worker '{"socket": 5, "memory": 6, "slot": 3, "rows": 16, ...}'

It inherits two descriptors: a socket to its parent, and a memfd (anonymous shared memory, no
name in /dev/shm) holding, for each of its `lanes`, `rows` output rows and an input area. A
request is a JSON header naming its lane and listing items, each a file range
`["f", path, offset, size, crc32c or -1]`, bytes in the lane's input area `["m", offset, size]`,
or `["b"]` (its bytes follow as the next message); the reply lists the items that failed as
`[k, reason, message]`. Requests are answered in order; the parent sends the next one on the
other lane while this one decodes. A size of -1 reads the whole file. End of file on the
socket, the parent gone, ends the process.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import sys
import time
from typing import Any

import numpy as np

from trainer.data.decode import ImageDecodeError, decode_image
from trainer.data.ranges import read_checked


class _FileError(Exception):
    """A file that cannot be read; `reason` is one of FILE_ERRORS in decode_pool."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _read_range(item: list[Any]) -> bytes:
    _, path, offset, size, crc = item
    try:
        return read_checked(path, offset, size, None if crc < 0 else crc)
    except FileNotFoundError:
        raise _FileError("not_found", f"{path}: no such file or directory") from None
    except PermissionError:
        raise _FileError(
            "permission_denied", f"{path}: permission denied; check the file's owner and mode"
        ) from None
    except OSError as e:
        raise _FileError("os_error", f"{path}: cannot read it ({e.strerror or e})") from None


def serve(conn: Any, out: np.ndarray, inboxes: list[memoryview], options: dict[str, Any]) -> None:
    """Answer requests on `conn` until the parent closes it; pixels go to `out[lane, k]`."""
    size = (options["height"], options["width"])
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        lane, items = request["lane"], request["items"]
        rows, inbox = out[lane], inboxes[lane]
        errors, started = [], time.perf_counter()
        for k, item in enumerate(items):
            try:
                if item[0] == "m":
                    data = inbox[item[1] : item[1] + item[2]]  # no copy: a bytes-like
                elif item[0] == "b":
                    data = conn.recv_bytes()
                else:
                    data = _read_range(item)
                rows[k] = decode_image(
                    data,
                    size=size,
                    dtype=options["dtype"],
                    max_pixels=options["max_pixels"],
                    resize=options["resize"],
                )
            except (ImageDecodeError, _FileError) as e:
                errors.append([k, e.reason, str(e)])
        reply = {"errors": errors, "seconds": time.perf_counter() - started}
        try:
            conn.send_bytes(json.dumps(reply).encode())
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    """Map the shared rows, then serve; see the module docstring."""
    from multiprocessing.connection import Connection

    import cv2

    # Ctrl-C reaches the whole process group; the parent decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # one process per core already
    options = json.loads((argv or sys.argv[1:])[0])
    lanes, slot, inbox_bytes = options["lanes"], options["slot"], options["inbox_bytes"]
    shape = (lanes, options["rows"], options["height"], options["width"], 3)
    dtype = np.dtype(options["dtype"])
    memory = mmap.mmap(options["memory"], 0)
    os.close(options["memory"])
    out_bytes = int(np.prod(shape)) * dtype.itemsize
    out = np.ndarray(shape, dtype, buffer=memory, offset=slot * out_bytes)
    first = options["inbox_offset"] + slot * lanes * inbox_bytes
    inboxes = [
        memoryview(memory)[first + k * inbox_bytes : first + (k + 1) * inbox_bytes]
        for k in range(lanes)
    ]
    serve(Connection(options["socket"]), out, inboxes, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
