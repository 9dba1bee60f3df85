"""TensorFlow's errors from a training step, turned into the user's own (and its exit code)."""

from __future__ import annotations

import re

from trainer.distribute.cluster import Cluster
from trainer.errors import PeerLostError


def translate(error: Exception, *, cluster: Cluster, input_error: BaseException | None) -> None:
    """Raises what `error` (a tf.errors.OpError) means for the user; returns if it means nothing."""
    import tensorflow as tf

    if input_error is not None:
        raise input_error from None
    lost = (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.CancelledError,
        tf.errors.AbortedError,
    )
    if cluster.is_multi_worker and isinstance(error, lost):
        text = getattr(error, "message", "") or str(error)
        dead = sorted(set(re.findall(r"/job:worker/replica:\d+/task:(\d+)", text)))
        why = (
            f"worker(s) {', '.join(dead)} stopped sending heartbeats"
            if "heartbeat" in text and dead
            else f"{type(error).__name__}: {text.strip().splitlines()[-1][:160]}"
        )
        raise PeerLostError(
            f"worker {cluster.task_index}: lost contact with a peer ({why}); "
            "restart the job, it resumes from the last checkpoint"
        ) from None
