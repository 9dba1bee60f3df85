"""The model and what trains it, built under the strategy's scope: seeds, policy, optimizer."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from trainer.data.index import DatasetIndex
from trainer.data.storage import Storage
from trainer.distribute.strategy import StrategySetup

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainable:
    """The model and what trains it, built under the strategy's scope."""

    model: Any
    optimizer: Any
    policy: str
    learning_rate: float
    stop_votes: Any  # a per-process tf.Variable: each worker votes its own flag


def build_trainable(
    config: Any, setup: StrategySetup, index: DatasetIndex, storage: Storage
) -> Trainable:
    """Seeds, dtype policy, then the model and optimizer under the strategy's scope."""
    import keras
    import tensorflow as tf

    from trainer.distribute.precision import resolve_policy
    from trainer.model.optimizer import learning_rate, make_optimizer
    from trainer.model.weights import load_init_weights
    from trainer.model.zoo import build_model

    # TF's Python logger narrates every collective it builds; keep `kubectl logs` readable.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    policy = resolve_policy(config.mixed_precision, setup)
    if policy != "float32":
        keras.mixed_precision.set_dtype_policy(policy)
    rate = learning_rate(config.learning_rate, replicas=setup.replicas, scale_lr=config.scale_lr)
    with setup.strategy.scope():
        model = build_model(
            config.model,
            num_classes=index.num_classes,
            image_size=tuple(config.image_size),
            input_dtype=config.dtype,
        )
        if config.init_weights:
            load_init_weights(
                model, config.init_weights, storage=storage, architecture=config.model
            )
        optimizer = make_optimizer(rate, policy=policy)
        optimizer.build(model.trainable_variables)
    stop_votes = tf.Variable(0.0, trainable=False, name="stop_vote")  # outside the scope
    logger.info(
        "model %s: %d parameters, dtype policy %s, learning rate %g",
        config.model,
        model.count_params(),
        policy,
        rate,
    )
    return Trainable(model, optimizer, policy, rate, stop_votes)
