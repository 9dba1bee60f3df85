"""The compiled functions: N training steps per call, a whole evaluation, a sum over workers.

Each runs `strategy.run` inside a `tf.function`. The training step returns, summed over every
replica, [loss sum, correct, samples, input digest (0 unless --trace-steps), stop votes]: the
loop needs no other collective to log, trace inputs or agree to stop. Augmentation is drawn from
(seed, step, replica), so a resumed run draws exactly what the uninterrupted one did. With
`jit_compile`, the forward and backward pass is compiled by XLA; augmentation and the
optimizer's update (which all-reduces) stay outside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainer.train.augment import augment

TOP_K = 5


@dataclasses.dataclass(frozen=True)
class StepOptions:
    num_classes: int
    seed: int = 0
    augment: str = "none"
    label_smoothing: float = 0.0
    class_weights: Sequence[float] | None = None  # per class; None weighs every sample 1
    jit_compile: bool = False
    trace: bool = False  # --trace-steps: a digest of each replica's input (a pass over it)
    overflow_step: int = -1  # tests only: a non-finite loss on replica 1 at this step


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    # (iterator, steps, first_step) -> (totals[5], digests)
    train_chunk: Callable[[Any, Any, Any], tuple[Any, Any]]
    # (iterator, steps) -> ([weighted loss, correct, weight, top-5 correct], confusion[k, k])
    eval_all: Callable[[Any, Any], tuple[Any, Any]]
    sum_over_workers: Callable[[Any], Any]  # a per-worker vector -> the sum of every worker's


def step_options(config: Any, data: Any, *, gpus: int, hooks: Any) -> StepOptions:
    """The step's options from the run's config, its data and devices."""
    weights = None
    if config.class_weight == "balanced":
        counts = np.bincount(data.train.labels, minlength=data.index.num_classes)
        # Inverse frequency, normalised so a balanced dataset weighs every sample 1.
        weights = [len(data.train) / (len(counts) * max(int(c), 1)) for c in counts]
    jit = config.jit_compile == "on" or (config.jit_compile == "auto" and gpus > 0)
    return StepOptions(
        num_classes=data.index.num_classes,
        seed=config.seed,
        augment=config.augment,
        label_smoothing=config.label_smoothing,
        class_weights=weights,
        jit_compile=jit,
        trace=bool(config.trace_steps),
        overflow_step=hooks.overflow_step,
    )


def compile_steps(
    strategy: Any,
    model: Any,
    optimizer: Any,
    stop_votes: Any,
    *,
    local_replicas: int,
    options: StepOptions,
) -> CompiledSteps:
    """The step functions for `model` under `strategy` (rebuild them when trainability changes)."""
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    k = options.num_classes
    weights = tf.constant(options.class_weights or [1.0] * k, tf.float32)
    variables = model.trainable_variables

    def loss_per_example(y, logits):
        if options.label_smoothing:
            target = tf.one_hot(y, k)
            return keras.losses.categorical_crossentropy(
                target, logits, from_logits=True, label_smoothing=options.label_smoothing
            )
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    def gradients(x, y, poison):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_example = loss_per_example(y, logits)
            weighted = per_example * tf.gather(weights, y)
            global_batch = tf.shape(y)[0] * replicas
            loss = tf.nn.compute_average_loss(weighted, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            loss = tf.where(poison, tf.constant(float("inf"), loss.dtype), loss)
            to_grad = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(to_grad, variables)
        correct = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == y, tf.float32)
        return grads, per_example, correct

    if options.jit_compile:
        gradients = tf.function(gradients, jit_compile=True)

    def train_step(x, y, step):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.stack(
            [tf.constant(options.seed, tf.int64), step * 1024 + tf.cast(replica, tf.int64)]
        )
        poison = tf.logical_and(tf.equal(step, options.overflow_step), tf.equal(replica, 1))
        # Outside XLA: crop_and_resize has no XLA kernel.
        augmented = augment(x, seed=seed, level=options.augment)
        grads, per_example, correct = gradients(augmented, y, poison)
        optimizer.apply(grads, variables)
        digest = tf.constant(0.0, tf.float64)
        if options.trace:
            pixels, labels = tf.cast(x, tf.float64), tf.cast(y, tf.float64)
            digest = tf.reduce_sum(pixels) + tf.reduce_sum(labels) * 1e9
        return tf.stack(
            [
                tf.reduce_sum(
                    tf.cast(tf.where(tf.math.is_finite(per_example), per_example, 0.0), tf.float64)
                ),
                tf.reduce_sum(tf.cast(correct, tf.float64)),
                tf.cast(tf.shape(y)[0], tf.float64),
                digest,
                tf.cast(stop_votes.read_value(), tf.float64),
            ]
        )

    @tf.function
    def train_chunk(iterator, steps, first_step):
        totals = tf.zeros([5], tf.float64)
        digests = tf.TensorArray(tf.float64, size=steps)
        for i in tf.range(steps):
            step = tf.cast(first_step, tf.int64) + tf.cast(i, tf.int64)
            x, y = next(iterator)
            out = strategy.run(train_step, args=(x, y, step))
            out = strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
            totals += out
            digests = digests.write(i, out[3])
        return totals, digests.stack()

    def eval_step(x, y, w):
        logits = tf.cast(model(x, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.cast(predicted == y, tf.float64)
        top = tf.cast(tf.math.in_top_k(y, logits, min(TOP_K, k)), tf.float64)
        w = tf.cast(w, tf.float64)
        totals = tf.stack(
            [
                tf.reduce_sum(tf.cast(per_example, tf.float64) * w),
                tf.reduce_sum(correct * w),
                tf.reduce_sum(w),
                tf.reduce_sum(top * w),
            ]
        )
        confusion = tf.math.confusion_matrix(y, predicted, k, weights=w, dtype=tf.float64)
        return totals, confusion

    @tf.function
    def eval_all(iterator, steps):
        totals = tf.zeros([4], tf.float64)
        confusion = tf.zeros([k, k], tf.float64)
        for _ in tf.range(steps):
            out, matrix = strategy.run(eval_step, args=next(iterator))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
            confusion += strategy.reduce(tf.distribute.ReduceOp.SUM, matrix, axis=None)
        return totals, confusion

    @tf.function
    def sum_over_workers(vector):
        # Every replica holds its worker's vector: divide by the local replicas, then sum all.
        out = strategy.run(lambda v: v / local_replicas, args=(vector,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    return CompiledSteps(train_chunk, eval_all, sum_over_workers)
