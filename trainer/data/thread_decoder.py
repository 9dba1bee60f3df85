"""`ThreadDecoder`: decode_image on the caller's thread, at most `threads` at once.

    decoder = ThreadDecoder(size=(224, 224), threads=2, counters=counters)
    pixels = decoder.decode(blob)          # as DecodePool.decode, without processes

Many threads hide object-store latency, but more decoders than cores only fight over the GIL
and the caches: a decode takes one of `threads` slots.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from trainer.data.counters import Counters
from trainer.data.decode import decode_image


class ThreadDecoder:
    """Bytes → pixels in this process; the time spent goes to `decode_seconds`."""

    def __init__(
        self,
        *,
        size: tuple[int, int],
        dtype: str = "uint8",
        max_pixels: int = 89_478_485,
        resize: str = "squash",
        threads: int | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.options = dict(size=size, dtype=dtype, max_pixels=max_pixels, resize=resize)
        self.counters = counters if counters is not None else Counters()
        self._slots = threading.BoundedSemaphore(threads or os.cpu_count() or 1)

    def decode(self, data: bytes) -> np.ndarray:
        """One image's pixels; raises ImageDecodeError."""
        with self._slots:
            started = time.perf_counter()
            try:
                return decode_image(data, **self.options)
            finally:
                self.counters.add("decode_seconds", time.perf_counter() - started)
