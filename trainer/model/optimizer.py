"""The optimizer for a run: Adam at the (replica-scaled) rate, loss-scaled under float16."""

from __future__ import annotations

from typing import Any


def learning_rate(base: float, *, replicas: int, scale_lr: bool) -> float:
    """`--learning-rate`, times the replica count with --scale-lr (the linear scaling rule)."""
    return base * (replicas if scale_lr else 1)


def make_optimizer(rate: float, *, policy: str) -> Any:
    """Adam; wrapped in a LossScaleOptimizer when the policy computes in float16."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=rate)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
