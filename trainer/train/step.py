"""The compiled functions: N training steps per call, a whole evaluation, a sum over workers.

Each runs `strategy.run` inside a `tf.function`. The training step returns, summed over every
replica, [loss sum, correct, samples, input digest, stop votes]: the loop needs no other
collective to log, trace inputs or agree to stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    train_chunk: Callable[[Any, Any], tuple[Any, Any]]  # (iterator, steps) -> (totals[5], digests)
    eval_all: Callable[[Any, Any], Any]  # (iterator, steps) -> [weighted loss, correct, weight]
    sum_over_workers: Callable[[Any], Any]  # a per-worker vector -> the sum of every worker's


def compile_steps(
    strategy: Any, model: Any, optimizer: Any, stop_votes: Any, *, local_replicas: int
) -> CompiledSteps:
    """The step functions for `model` under `strategy`."""
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            global_batch = tf.shape(y)[0] * replicas
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            to_grad = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(to_grad, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        correct = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == y, tf.float32)
        digest = tf.reduce_sum(tf.cast(x, tf.float64)) + tf.reduce_sum(tf.cast(y, tf.float64)) * 1e9
        return tf.stack(
            [
                tf.reduce_sum(tf.cast(per_example, tf.float64)),
                tf.reduce_sum(tf.cast(correct, tf.float64)),
                tf.cast(tf.shape(y)[0], tf.float64),
                digest,
                tf.cast(stop_votes.read_value(), tf.float64),
            ]
        )

    @tf.function
    def train_chunk(iterator, steps):
        totals = tf.zeros([5], tf.float64)
        digests = tf.TensorArray(tf.float64, size=steps)
        for i in tf.range(steps):
            out = strategy.run(train_step, args=next(iterator))
            out = strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
            totals += out
            digests = digests.write(i, out[3])
        return totals, digests.stack()

    def eval_step(x, y, w):
        logits = model(x, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == y, tf.float64)
        w = tf.cast(w, tf.float64)
        return tf.stack(
            [
                tf.reduce_sum(tf.cast(per_example, tf.float64) * w),
                tf.reduce_sum(correct * w),
                tf.reduce_sum(w),
            ]
        )

    @tf.function
    def eval_all(iterator, steps):
        totals = tf.zeros([3], tf.float64)
        for _ in tf.range(steps):
            out = strategy.run(eval_step, args=next(iterator))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
        return totals

    @tf.function
    def sum_over_workers(vector):
        # Every replica holds its worker's vector: divide by the local replicas, then sum all.
        out = strategy.run(lambda v: v / local_replicas, args=(vector,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    return CompiledSteps(train_chunk, eval_all, sum_over_workers)
