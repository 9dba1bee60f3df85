"""Where a run picks up: the last committed checkpoint, and whether early stopping has hit.

A checkpoint from another data plan (batch size, seed, worker count, dataset) keeps its weights
and restarts its epoch; one trained under another dtype policy keeps its weights and position
and restarts the optimizer's state (a pod preempted on an A100 may come back on a T4).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trainer.model.trainable import Trainable
from trainer.train.checkpoint import Checkpointer

logger = logging.getLogger(__name__)


def resume(
    checkpointer: Checkpointer, trainable: Trainable, *, plan: dict[str, Any], steps_per_epoch: int
) -> tuple[int, list[dict[str, Any]], np.ndarray, list[list[Any]]]:
    """(step, history, this epoch's totals so far, trace) from the last committed checkpoint."""
    model, optimizer, policy = trainable.model, trainable.optimizer, trainable.policy

    def same_policy(state: dict[str, Any]) -> bool:
        return state.get("plan", {}).get("policy", policy) == policy

    state = checkpointer.restore(model=model, optimizer=optimizer, keep_optimizer=same_policy)
    state = state or {}
    step = int(state.get("step", 0))
    history: list[dict[str, Any]] = state.get("history", [])
    totals = np.asarray(state.get("epoch_totals", [0.0, 0.0, 0.0]), dtype=np.float64)
    trace = state.get("trace", [])
    old = dict(state.get("plan", {}))
    if state and not same_policy(state):
        logger.warning(
            "checkpoint was trained under dtype policy %s, this run uses %s: keeping its "
            "weights and position, restarting the optimizer's state",
            old.get("policy"),
            policy,
        )
        optimizer.iterations.assign(step)  # the learning rate schedule goes on
    old.setdefault("policy", policy)
    if state and {**old, "policy": policy} != plan:
        # Another batch size, seed or worker count: the old order cannot be continued.
        logger.warning(
            "checkpoint was written with another data plan (%s); keeping its "
            "weights and restarting epoch %d from its first batch",
            state.get("plan"),
            step // steps_per_epoch,
        )
        step = (step // steps_per_epoch) * steps_per_epoch
        totals[:] = 0
    if state:
        logger.info(
            "resumed from checkpoint at step %d: epoch %d, batch %d of %d",
            step,
            step // steps_per_epoch + 1,
            step % steps_per_epoch,
            steps_per_epoch,
        )
    return step, history, totals, trace


def patience_ran_out(history: list[dict[str, Any]], patience: int) -> bool:
    """--early-stopping-patience: no better validation accuracy for that many epochs."""
    scored = [h for h in history if "val_accuracy" in h]
    if not patience or len(scored) <= patience:
        return False
    best = int(np.argmax([h["val_accuracy"] for h in scored]))
    if len(scored) - 1 - best < patience:
        return False
    logger.info(
        "early stopping: validation accuracy has not improved for %d epochs (best %.4f at "
        "epoch %d)",
        patience,
        scored[best]["val_accuracy"],
        scored[best]["epoch"],
    )
    return True
