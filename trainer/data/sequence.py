"""`ImageSequence`: a Keras `PyDataset` that streams labelled images from object storage.

It replaces the article's `Sequence` that loads one file at a time: a thread pool fetches and
decodes a bounded number of batches ahead of the consumer, so one Python thread feeding the
accelerator rarely waits; Keras's own `workers` are not needed.

    index = discover("gs://bucket/flowers", storage=storage)
    train, val = index.split(val_split=0.2, seed=0)
    seq = ImageSequence(train, batch_size=64, image_size=(224, 224), storage=storage,
                        replica_multiple=strategy.num_replicas_in_sync)
    model.fit(seq, epochs=10, shuffle=False)   # the Sequence shuffles itself, per epoch

Batches are `(x, y)`: `x` uint8 (or float32 in [0, 1]) of shape `(n, H, W, 3)` and `y` int32
class ids. Order, sharding and the remainder policy come from `sampling.BatchPlan`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from trainer.data.batch_buffers import BatchBuffers
from trainer.data.cache import ByteCache
from trainer.data.counters import Counters
from trainer.data.decode import RESIZE_MODES, ImageDecodeError
from trainer.data.decode_pool import DecodePool, FileRange
from trainer.data.index import DatasetIndex
from trainer.data.quarantine import Quarantine
from trainer.data.sampling import BatchPlan
from trainer.data.storage import Storage, is_gcs
from trainer.data.thread_decoder import ThreadDecoder
from trainer.errors import DataError, StorageNotFoundError

logger = logging.getLogger(__name__)

DTYPES = ("uint8", "float32")
# A batch made only of unreadable objects after this many draws means the data is broken.
_MAX_REPLACEMENT_ATTEMPTS = 16
_BATCHES_IN_TENSORFLOW = 6


def default_fetch_threads(uris: Sequence[str]) -> int:
    """32 threads hide object-store latency; local files need only a couple per core."""
    if any(is_gcs(u) for u in uris[:1000]):
        return 32
    return 2 * (os.cpu_count() or 1)


def _log_remainder(plan: Any, shard_index: int, shard_count: int) -> None:
    if plan.padded:
        logger.info(
            "shard %d/%d: %d objects in %d batches; remainder 'pad' repeats %d samples per epoch",
            shard_index,
            shard_count,
            len(plan.members),
            len(plan),
            plan.padded,
        )
    if plan.dropped:
        logger.info(
            "shard %d/%d: %d objects in %d batches; remainder 'drop' leaves out %d "
            "samples per epoch (different ones each epoch)",
            shard_index,
            shard_count,
            len(plan.members),
            len(plan),
            plan.dropped,
        )


class ImageSequence(keras.utils.PyDataset):
    """Labelled image batches, prefetched by a thread pool; see the module docstring.

    Past 250 lines on purpose: what is left is one piece of state, the look-ahead (pending
    batches, their buffers, their loads and the replacements of bad samples under one lock
    and one plan); the corrupt-object policy, thread decoding and the byte cache are already
    modules of their own.
    """

    def __init__(
        self,
        index: DatasetIndex,
        *,
        batch_size: int,
        image_size: tuple[int, int],
        storage: Storage | None = None,
        dtype: str = "uint8",
        replica_multiple: int = 1,
        remainder: str = "pad",
        seed: int = 0,
        shuffle: bool = True,
        shard_index: int = 0,
        shard_count: int = 1,
        on_corrupt: str = "skip",
        fetch_threads: int | None = None,
        decode_threads: int | None = None,
        decoders: DecodePool | None = None,
        prefetch_batches: int = 4,
        cache: ByteCache | None = None,
        counters: Counters | None = None,
        quarantine_uri: str | None = None,
        max_pixels: int = 89_478_485,
        resize: str = "squash",
        epoch: int = 0,
        epochs: int | None = None,
        max_batches: int | None = None,
        urgent: bool = False,
        quarantine: Quarantine | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.index = index
        self.image_size = tuple(image_size)
        self.dtype = dtype
        self.on_corrupt = on_corrupt
        self.plan = self._make_plan(
            batch_size=batch_size,
            replica_multiple=replica_multiple,
            shard_index=shard_index,
            shard_count=shard_count,
            seed=seed,
            remainder=remainder,
            shuffle=shuffle,
        )
        if fetch_threads is None:
            fetch_threads = default_fetch_threads(index.uris)
        self.storage = storage if storage is not None else Storage(concurrency=fetch_threads)
        self.cache = cache
        self.counters = counters if counters is not None else Counters()
        self.quarantine_uri = quarantine_uri
        self.max_pixels = max_pixels
        self.resize = resize
        self.epoch = epoch
        # Bounds for the look-ahead, so that nothing past the last batch used is fetched.
        self.epochs = epochs
        self.max_batches = max_batches
        self.fetch_threads = fetch_threads
        # A manifest may mix local paths and gs:// objects: any remote one keeps per-image loads.
        self._remote = any(is_gcs(u) for u in index.uris)
        # Decode processes when given (shared, e.g. by training and validation), else threads.
        self.decoders = decoders
        options = dict(size=self.image_size, dtype=dtype, max_pixels=max_pixels, resize=resize)
        if decoders is not None:
            decoders.check_matches(**options)
        self._decoder = decoders or ThreadDecoder(
            **options, threads=decode_threads, counters=self.counters
        )
        self.prefetch_batches = prefetch_batches
        # Evaluation's batches go to shared decode processes before training's look-ahead:
        # the step waits for them.
        self.urgent = urgent
        # The batches being prepared, plus those the feed and TensorFlow still hold (its
        # prefetch, the step's own and the strategy's per-device buffers).
        self._buffers = BatchBuffers(
            (*self.image_size, 3), dtype, keep=prefetch_batches + _BATCHES_IN_TENSORFLOW
        )
        self._labels = np.asarray(index.labels, dtype=np.int32)
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], _BatchFuture] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # One shared by training and validation writes one report with both.
        self._quarantine = quarantine or Quarantine(
            on_corrupt, storage=self.storage, counters=self.counters, report_uri=quarantine_uri
        )
        _log_remainder(self.plan, shard_index, shard_count)

    # --- PyDataset protocol -------------------------------------------------------------------

    def __len__(self) -> int:
        if self.max_batches is not None:
            return min(len(self.plan), self.max_batches)
        return len(self.plan)

    @property
    def num_batches(self) -> int:
        return len(self)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range [0, {len(self)})")
        return self.get_batch(epoch=self.epoch, index=index)

    def on_epoch_end(self) -> None:
        self.epoch += 1

    # --- public API ---------------------------------------------------------------------------

    def get_batch(self, *, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of `epoch`; schedules the following batches on the pool."""
        started = time.perf_counter()
        with self._lock:
            self._drop_stale(epoch, index)
            future = self._pending.pop((epoch, index), None) or self._submit(epoch, index)
            for ahead in range(1, self.prefetch_batches + 1):
                key = self._advance(epoch, index, ahead)
                if self.epochs is not None and key[0] >= self.epochs:
                    break
                if key not in self._pending:
                    self._pending[key] = self._submit(*key)
        batch = future.result()
        self.counters.add("wait_seconds", time.perf_counter() - started)
        return batch

    def positions(self, *, epoch: int, index: int) -> np.ndarray:
        """The dataset positions batch `index` of `epoch` was planned to hold (before skips)."""
        return self.plan.batch(epoch=epoch, index=index)

    @property
    def quarantined(self) -> list[dict[str, str]]:
        return self._quarantine.records

    def release_buffers(self) -> None:
        """Frees the batch buffers kept for reuse (evaluation's, between evaluations)."""
        self._buffers.clear()

    def close(self) -> None:
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.release_buffers()

    def __enter__(self) -> ImageSequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- internals ----------------------------------------------------------------------------

    def _make_plan(self, **options: Any) -> Any:
        """The batch plan; a subclass may plan differently (packed shards)."""
        return BatchPlan(num_samples=len(self.index), **options)

    def _read(self, position: int, uri: str) -> bytes:
        """The bytes of sample `position`: fetched by name, unless the index reads them itself
        (a packed split's `read_sample`)."""
        reader = getattr(self.index, "read_sample", None)
        if reader is not None:
            return reader(position)
        if self.cache is not None:
            return self.cache.fetch(uri, self.storage.read, self.counters)
        return self.storage.read(uri)

    def _advance(self, epoch: int, index: int, ahead: int) -> tuple[int, int]:
        # Look-ahead runs across the epoch boundary, so epoch e+1 starts warm.
        epoch += (index + ahead) // len(self)
        return epoch, (index + ahead) % len(self)

    def _drop_stale(self, epoch: int, index: int) -> None:
        horizon = {self._advance(epoch, index, a) for a in range(self.prefetch_batches + 1)}
        for key in [k for k in self._pending if k not in horizon]:
            self._pending.pop(key).cancel()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.fetch_threads, thread_name_prefix="image-fetch"
            )
        return self._pool

    def _submit(self, epoch: int, index: int) -> _BatchFuture:
        positions = self.plan.batch(epoch=epoch, index=index)
        start, _ = self.plan.batch_bounds(index)
        x = self._buffers.take(len(positions))  # TensorFlow takes it without a copy
        y = self._labels[positions].copy()
        return _BatchFuture(self._schedule(x, y, positions, epoch, start), x, y)

    def _schedule(
        self, x: np.ndarray, y: np.ndarray, positions: np.ndarray, epoch: int, start: int
    ) -> list[concurrent.futures.Future]:
        """The loads that fill `x` and `y`: per image, or per chunk of files for a process."""
        pool = self._executor()
        if self._chunked():
            rows = self.decoders.rows
            return [
                pool.submit(self._load_chunk, x, y, s, positions[s : s + rows], epoch, start)
                for s in range(0, len(positions), rows)
            ]
        return [
            pool.submit(self._load_into, x, y, slot, int(pos), epoch, start + slot)
            for slot, pos in enumerate(positions)
        ]

    def _chunked(self) -> bool:
        """Whether decode processes read the files themselves: local files, no byte cache."""
        return self.decoders is not None and self.cache is None and not self._remote

    def _file_ranges(
        self, positions: np.ndarray, pins: contextlib.ExitStack
    ) -> list[FileRange | Exception]:
        """The files of samples `positions`, whole; `pins` keeps them while they are read."""
        return [FileRange(self.index.uris[p], 0, -1) for p in positions.tolist()]

    def _load_chunk(self, x, y, first: int, positions: np.ndarray, epoch: int, start: int) -> None:
        """Samples `positions` into rows `first`...: one request to a decode process, which
        reads the files; known and newly found bad ones are replaced one at a time."""
        uris = [self.index.uris[p] for p in positions.tolist()]
        todo = [k for k, uri in enumerate(uris) if uri not in self._quarantine]
        failed: dict[int, Exception | None] = dict.fromkeys(set(range(len(uris))) - set(todo))
        with contextlib.ExitStack() as pins:
            ranges = self._file_ranges(positions[todo], pins)
            failed.update({todo[i]: r for i, r in enumerate(ranges) if isinstance(r, Exception)})
            run = [i for i, r in enumerate(ranges) if not isinstance(r, Exception)]
            found = self.decoders.run(
                [ranges[i] for i in run], x, [first + todo[i] for i in run], urgent=self.urgent
            )
            failed.update({todo[run[j]]: e for j, e in found.items()})
        for k, error in sorted(failed.items()):
            if error is not None:
                if not isinstance(error, (ImageDecodeError, StorageNotFoundError)):
                    raise error
                self._quarantine.reject(uris[k], error)
            self._load_into(x, y, first + k, int(positions[k]), epoch, start + first + k)

    def _load_into(
        self, x: np.ndarray, y: np.ndarray, slot: int, position: int, epoch: int, epoch_slot: int
    ) -> None:
        for attempt in range(_MAX_REPLACEMENT_ATTEMPTS):
            uri = self.index.uris[position]
            if uri not in self._quarantine:
                try:
                    x[slot] = self._decoder.decode(self._read(position, uri))
                    y[slot] = self._labels[position]
                    return
                except (ImageDecodeError, StorageNotFoundError) as e:
                    self._quarantine.reject(uri, e)
            position = self.plan.replacement(epoch=epoch, slot=epoch_slot, attempt=attempt)
        raise DataError(
            f"{_MAX_REPLACEMENT_ATTEMPTS} unreadable images in a row around "
            f"{self.index.uris[position]}; see the quarantine report"
        )


class _BatchFuture:
    """The loads of one batch; `result()` waits for all and re-raises the first error."""

    def __init__(
        self, loads: list[concurrent.futures.Future], x: np.ndarray, y: np.ndarray
    ) -> None:
        self._loads, self._x, self._y = loads, x, y

    def cancel(self) -> None:
        for load in self._loads:
            load.cancel()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        for load in self._loads:
            load.result()
        return self._x, self._y
