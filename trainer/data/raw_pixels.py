"""Raw RGB pixels as a `.npy` member (WebDataset's own extension for arrays): read, not decoded.

    blob = encode_raw(pixels)                 # (h, w, 3) uint8 -> bytes
    pixels = decode_raw(blob, max_pixels=N)   # -> (h, w, 3) uint8, a view of `blob`

`trainer pack --raw-max-pixels` stores images this small so: about ten times a 4:2:0 JPEG's bytes,
but a copy and a resize instead of a decode (docs/performance.md has the figures).
"""

from __future__ import annotations

import ast

import numpy as np

MAGIC = b"\x93NUMPY"


class RawPixelsError(ValueError):
    """Not an (h, w, 3) uint8 .npy array."""


def encode_raw(pixels: np.ndarray) -> bytes:
    """A version 1.0 .npy of C-ordered (h, w, 3) uint8 `pixels`."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise RawPixelsError(f"raw pixels must be (h, w, 3) uint8: {pixels.shape} {pixels.dtype}")
    header = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(pixels.shape)})
    # NumPy pads the header with spaces and a newline so that the data starts 64-byte aligned.
    header = header + " " * (-(len(MAGIC) + 4 + len(header) + 1) % 64) + "\n"
    return (
        MAGIC
        + b"\x01\x00"
        + len(header).to_bytes(2, "little")
        + header.encode("latin1")
        + (np.ascontiguousarray(pixels).tobytes())
    )


def decode_raw(data: bytes | memoryview, *, max_pixels: int) -> np.ndarray:
    """The pixels of an `encode_raw` blob; raises RawPixelsError for anything else."""
    if bytes(data[:6]) != MAGIC or len(data) < 10 or bytes(data[6:8]) != b"\x01\x00":
        raise RawPixelsError("not a version 1.0 .npy array")
    size = int.from_bytes(data[8:10], "little")
    try:
        header = ast.literal_eval(bytes(data[10 : 10 + size]).decode("latin1"))
        shape = tuple(int(d) for d in header["shape"])
        descr, fortran = header["descr"], header["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise RawPixelsError(f"unreadable .npy header ({e})") from None
    if descr not in ("|u1", "<u1") or fortran or len(shape) != 3 or shape[2] != 3:
        raise RawPixelsError(f"raw pixels must be (h, w, 3) uint8, got {shape} {descr}")
    if shape[0] < 1 or shape[1] < 1 or shape[0] * shape[1] > max_pixels:
        raise RawPixelsError(f"raw pixels of {shape[1]}x{shape[0]} are out of range")
    body = memoryview(data)[10 + size :]
    if len(body) != shape[0] * shape[1] * 3:
        raise RawPixelsError(f"raw pixels: {len(body)} bytes for a {shape[1]}x{shape[0]} image")
    return np.frombuffer(body, np.uint8).reshape(shape)
