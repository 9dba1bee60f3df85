"""The optimizer for a run: Adam, AdamW or SGD, a warmed-up schedule, loss scaling for float16.

    rate = learning_rate(1e-3, replicas=8, scale_lr=True)
    schedule = make_schedule(rate, kind="cosine", total_steps=5000, warmup_steps=400)
    optimizer = make_optimizer("adamw", schedule, policy="mixed_float16", weight_decay=0.05)

Keras's LossScaleOptimizer decides "all gradients finite" per replica, from gradients that
are not yet all-reduced (and under MirroredStrategy takes the first replica's answer), so an
overflow on one replica can reach the weights and workers can take different branches.
`SyncedLossScaleOptimizer` all-reduces that decision: every replica and worker agrees.
"""

from __future__ import annotations

import math
from typing import Any

import keras


def learning_rate(base: float, *, replicas: int, scale_lr: bool) -> float:
    """`--learning-rate`, times the replica count with --scale-lr (the linear scaling rule)."""
    return base * (replicas if scale_lr else 1)


def warmup_epochs(explicit: float | None, *, epochs: int, scale_lr: bool, replicas: int) -> float:
    """--warmup-epochs, or its default: 5 epochs or a tenth of the run with a scaled rate."""
    if explicit is not None:
        return explicit
    return min(5.0, 0.1 * epochs) if scale_lr and replicas > 1 else 0.0


@keras.saving.register_keras_serializable(package="streamtrain")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `rate` over `warmup_steps`, then constant, cosine or step decay."""

    def __init__(self, rate: float, *, kind: str, total_steps: int, warmup_steps: int) -> None:
        self.rate, self.kind = rate, kind
        self.total_steps, self.warmup_steps = max(total_steps, 1), warmup_steps

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        after = ops.maximum(step - self.warmup_steps, 0.0)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        if self.kind == "cosine":
            decayed = 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(after / span, 1.0)))
        elif self.kind == "step":
            # x0.1 after a third of the steps and again after two thirds.
            third = span / 3.0
            decayed = ops.power(0.1, ops.floor(ops.minimum(after / third, 2.0)))
        else:
            decayed = ops.ones_like(step)
        ramp = ops.minimum((step + 1.0) / warm, 1.0) if self.warmup_steps else 1.0
        return self.rate * ramp * decayed

    def get_config(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "kind": self.kind,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


class SyncedLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Dynamic loss scaling whose finite-gradients decision is the same on every replica."""

    def check_finite(self, grads: list[Any]) -> Any:
        import tensorflow as tf

        local = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or not tf.distribute.has_strategy():
            return local
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32))
        return tf.equal(bad, 0.0)


def make_optimizer(
    kind: str,
    schedule: Any,
    *,
    policy: str,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    clip_norm: float | None = None,
    replicas: int = 1,
) -> Any:
    """The optimizer; loss-scaled under float16, and under bfloat16 a step whose gradients are
    not finite is skipped on every replica alike (a scale of 1 that never grows).

    Keras clips each replica's gradient before the all-reduce; at `clip_norm / replicas` each,
    their sum (the applied gradient) never exceeds `clip_norm`.
    """
    extra: dict[str, Any] = {}
    if clip_norm:
        extra["global_clipnorm"] = clip_norm / replicas
    if weight_decay:
        extra["weight_decay"] = weight_decay
    if kind == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, **extra)
    elif kind == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, **extra)  # default decay 0.004
    else:
        optimizer = keras.optimizers.Adam(learning_rate=schedule, **extra)
    if policy == "mixed_float16":
        optimizer = SyncedLossScaleOptimizer(optimizer)
    elif policy == "mixed_bfloat16":
        optimizer = SyncedLossScaleOptimizer(
            optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1
        )
    return optimizer
