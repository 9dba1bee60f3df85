"""The exported model judged on the whole validation split, through the trainer's decode path.

    figures = evaluate_exported(exported.model, data.val, config=config, storage=storage,
                                batch_size=inputs.per_replica)
    figures["val_accuracy"]                   # what --min-val-accuracy is judged on

It runs on the chief only, after the export, in one process: one unsharded ImageSequence over
every validation object (decoded exactly as in training), the float32 clone on each batch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trainer.data.index import DatasetIndex
from trainer.data.storage import Storage
from trainer.errors import DataError

logger = logging.getLogger(__name__)


def evaluate_exported(
    model: Any,
    val: DatasetIndex,
    *,
    config: Any,
    storage: Storage,
    batch_size: int,
    cache: Any | None = None,
) -> dict[str, Any]:
    """{"val_accuracy", "val_samples"} of `model` over every object of `val` once ({} if none).

    `batch_size` is best the per-replica batch: it fit one device in training, with gradients.
    """
    if len(val) == 0:
        return {}
    import tensorflow as tf

    from trainer.data.counters import Counters
    from trainer.data.sequence import ImageSequence

    try:
        seq = ImageSequence(
            val,
            batch_size=batch_size,
            image_size=tuple(config.image_size),
            storage=storage,
            dtype=config.dtype,
            remainder="pad",
            shuffle=False,
            epochs=1,
            seed=config.seed,
            on_corrupt=config.on_corrupt,
            fetch_threads=config.fetch_threads,
            decode_threads=config.decode_threads,
            prefetch_batches=config.prefetch_batches,
            cache=cache,
            counters=Counters(),  # the run's own counters describe training
            resize=getattr(config, "resize", "squash"),
        )
    except ValueError as e:
        raise DataError(f"--data {config.data}: {e}") from None
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))
    correct = counted = 0.0
    real = len(seq.plan.members)
    try:
        for index in range(len(seq)):
            x, y = seq.get_batch(epoch=0, index=index)
            start, stop = seq.plan.batch_bounds(index)
            weight = (np.arange(start, stop) < real).astype(np.float64)  # 0 for pad repeats
            hits = predict(tf.constant(x)).numpy() == y
            correct += float(np.sum(hits * weight))
            counted += float(np.sum(weight))
    finally:
        seq.close()
    return {"val_accuracy": correct / counted, "val_samples": round(counted)}
