"""ImageSequence batches -> equal per-replica chunks -> one tf.data pipeline per worker.

`distribute_datasets_from_function` calls the dataset function once per worker; each yields
its own shard's batches split into `local_replicas` chunks, which the strategy hands out one
per replica. An exception raised inside a generator reaches the step as a bare TF error, so
the original is kept in `input_error` for the loop to re-raise with its own message.

Evaluation keeps one iterator for the whole run: making a distributed iterator costs the
trainer's main thread about 0.2 s (a fresh dataset, MultiDeviceIterator set-up). Its generator
waits for the next `validation()` call between passes, so nothing is read ahead into the
training that follows; `close()` ends it.

The pixels are not copied on the way: the Sequences' batches are 64-byte aligned
(`BatchBuffers`), and so is every per-replica slice of them whose row bytes allow it, which
`from_generator` then wraps as a tensor as it is. A slice that is not gets one aligned copy.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from trainer.data.batch_buffers import aligned_copy, is_aligned
from trainer.data.sequence import ImageSequence
from trainer.distribute.strategy import StrategySetup
from trainer.train.hooks import Hooks, NoHooks


def split_per_replica(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, parts: int):
    """Equal chunks of one batch, one per local replica (batches are multiples of `parts`)."""
    size = len(y) // parts
    for k in range(parts):
        piece = slice(k * size, (k + 1) * size)
        pixels = x[piece]
        if not is_aligned(pixels):  # e.g. 299 px rows: TensorFlow would copy it, slowly
            pixels = aligned_copy(pixels)
        yield (pixels, y[piece]) if w is None else (pixels, y[piece], w[piece])


class Feed:
    """Builds the distributed datasets for training and evaluation."""

    def __init__(
        self,
        setup: StrategySetup,
        *,
        image_size: tuple[int, int],
        dtype: str,
        hooks: Hooks | None = None,
    ) -> None:
        self.setup = setup
        self.image_size = image_size
        self.dtype = dtype
        self.hooks = hooks or NoHooks()
        self.input_error: BaseException | None = None
        # Per generator thread, when the batch it fetches was asked for: the stall watchdog's.
        self._fetching: dict[int, float] = {}
        self._val_iterator: Any = None
        self._val_passes = threading.Semaphore(0)
        self._closed = False

    def training(
        self, seq: ImageSequence, *, start_step: int, total_steps: int, fed: dict[int, np.ndarray]
    ) -> Any:
        """From `start_step` to the end; marks in `fed[epoch]` the samples this worker fed."""
        batches = functools.partial(self._train_batches, seq, start_step, total_steps, fed)
        return self._distribute(batches, with_weights=False)

    def validation(self, seq: ImageSequence) -> Any:
        """The validation iterator, granted one more pass over every validation sample (pad
        repeats weighted 0); the same iterator every time."""
        if self._val_iterator is None:
            passes = functools.partial(self._val_passes_of, seq)
            self._val_iterator = iter(self._distribute(passes, with_weights=True))
        self._val_passes.release()
        return self._val_iterator

    def close(self) -> None:
        """Ends the validation generator where it waits for its next pass."""
        self._closed = True
        self._val_passes.release()

    def _val_passes_of(self, seq: ImageSequence) -> Iterator[tuple[np.ndarray, ...]]:
        while True:
            self._val_passes.acquire()
            if self._closed:
                return
            yield from self._val_batches(seq)

    def _distribute(self, generator: Callable[[], Iterator[Any]], *, with_weights: bool) -> Any:
        import tensorflow as tf

        height, width = self.image_size
        spec = [
            tf.TensorSpec((None, height, width, 3), self.dtype),
            tf.TensorSpec((None,), tf.int32),
        ]
        if with_weights:
            spec.append(tf.TensorSpec((None,), tf.float32))
        workers = self.setup.cluster.num_workers

        def dataset_fn(context):
            if context.num_input_pipelines != workers:
                raise RuntimeError("one input pipeline per worker expected")
            return tf.data.Dataset.from_generator(
                lambda: self._keep_error(generator()), output_signature=tuple(spec)
            ).prefetch(2)

        return self.setup.strategy.distribute_datasets_from_function(dataset_fn)

    def _keep_error(self, generator: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from generator
        except BaseException as e:
            self.input_error = e
            raise

    def _train_batches(
        self, seq: ImageSequence, start: int, total: int, fed: dict[int, np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        parts, steps_per_epoch = self.setup.local_replicas, len(seq)
        for step in range(start, total):
            epoch, index = divmod(step, steps_per_epoch)
            x, y = self._fetch(seq, epoch, index)
            # Keyed by epoch: this generator runs ahead of the step that consumes its output.
            mask = fed.setdefault(epoch, np.zeros(len(seq.index), dtype=bool))
            mask[seq.positions(epoch=epoch, index=index)] = True
            yield from split_per_replica(x, y, None, parts)

    @property
    def waiting_since(self) -> float | None:
        """Since when the oldest batch still being fetched was asked for; None if none is."""
        return min(list(self._fetching.values()), default=None)

    def _fetch(self, seq: ImageSequence, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        me = threading.get_ident()
        self._fetching[me] = time.monotonic()
        try:
            self.hooks.reached("input")
            return seq.get_batch(epoch=epoch, index=index)
        finally:
            del self._fetching[me]

    def _val_batches(self, seq: ImageSequence) -> Iterator[tuple[np.ndarray, ...]]:
        parts, real = self.setup.local_replicas, len(seq.plan.members)
        for index in range(len(seq)):
            x, y = self._fetch(seq, 0, index)
            start, stop = seq.plan.batch_bounds(index)
            w = (np.arange(start, stop) < real).astype(np.float32)  # 0 for pad repeats
            yield from split_per_replica(x, y, w, parts)
