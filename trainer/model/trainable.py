"""The model and what trains it, built under the strategy's scope: seeds, policy, optimizer.

The optimizer is built over every weight, the backbone's included, before a frozen phase
starts: its variables are the same in both phases, so a checkpoint from either resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import urllib.error
from typing import Any

from trainer.data.index import DatasetIndex
from trainer.data.storage import Storage
from trainer.distribute.strategy import StrategySetup
from trainer.errors import ConfigError, StorageUnavailableError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainable:
    """The model and what trains it, built under the strategy's scope."""

    model: Any
    optimizer: Any
    policy: str
    learning_rate: float
    stop_votes: Any  # a per-process tf.Variable: each worker votes its own flag
    freeze_epochs: int = 0

    def frozen_in(self, epoch: int) -> bool:
        """Whether the backbone is frozen during `epoch` (0-based)."""
        return epoch < self.freeze_epochs

    def enter_phase(self, epoch: int) -> None:
        """Freezes or unfreezes the backbone for `epoch`; compiled steps must be rebuilt."""
        from trainer.model.zoo import set_backbone_trainable

        set_backbone_trainable(self.model, not self.frozen_in(epoch))


def build_trainable(
    config: Any,
    setup: StrategySetup,
    index: DatasetIndex,
    storage: Storage,
    *,
    steps_per_epoch: int,
) -> Trainable:
    """Seeds, dtype policy, then the model and optimizer under the strategy's scope."""
    import keras
    import tensorflow as tf

    from trainer.distribute.precision import resolve_policy
    from trainer.model.optimizer import (
        WarmupSchedule,
        learning_rate,
        make_optimizer,
        warmup_epochs,
    )
    from trainer.model.weights import fetch_backbone, load_init_weights
    from trainer.model.zoo import build_model

    # TF's Python logger narrates every collective it builds; keep `kubectl logs` readable.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
    policy = resolve_policy(config.mixed_precision, setup)
    keras.mixed_precision.set_dtype_policy(policy)
    rate = learning_rate(config.learning_rate, replicas=setup.replicas, scale_lr=config.scale_lr)
    warmup = warmup_epochs(
        config.warmup_epochs,
        epochs=config.epochs,
        scale_lr=config.scale_lr,
        replicas=setup.replicas,
    )
    schedule = WarmupSchedule(
        rate,
        kind=config.lr_schedule,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=round(warmup * steps_per_epoch),
    )
    with tempfile.TemporaryDirectory(prefix="streamtrain-weights-") as tmp, setup.strategy.scope():
        source = fetch_backbone(config.weights, storage=storage, tmp=tmp)
        try:
            model = build_model(
                config.model,
                num_classes=index.num_classes,
                image_size=tuple(config.image_size),
                input_dtype=config.dtype,
                weights=source.for_builder,
                pretrained=source.pretrained,
            )
        except Exception as e:
            if config.weights == "imagenet" and _download_failed(e):
                raise StorageUnavailableError(
                    f"--weights (TRAINER_WEIGHTS) imagenet: downloading the {config.model} "
                    f"ImageNet weights failed ({' '.join(str(e).split())[:240]}); without "
                    "internet access, fetch that file elsewhere and pass it with --weights PATH "
                    "(a local or gs:// .h5 or .weights.h5 file)"
                ) from None
            if not isinstance(e, (ValueError, OSError)):
                raise
            raise ConfigError(
                f"--weights {config.weights}: cannot load into the {config.model} backbone "
                f"({' '.join(str(e).split())[:200]}); pass weights saved from the same --model"
            ) from None
        source.copy_into(model)
        if config.init_weights:
            load_init_weights(
                model, config.init_weights, storage=storage, architecture=config.model
            )
        optimizer = make_optimizer(
            config.optimizer,
            schedule,
            policy=policy,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            clip_norm=config.clip_norm,
            replicas=setup.replicas,
        )
        optimizer.build(model.trainable_variables)
    stop_votes = tf.Variable(0.0, trainable=False, name="stop_vote")  # outside the scope
    logger.info(
        "model %s (backbone weights: %s): %d parameters, dtype policy %s, %s learning rate %g "
        "(%s, %.3g warmup epochs)",
        config.model,
        config.weights,
        model.count_params(),
        policy,
        config.optimizer,
        rate,
        config.lr_schedule,
        warmup,
    )
    return Trainable(model, optimizer, policy, rate, stop_votes, config.freeze_epochs)


def _download_failed(error: BaseException) -> bool:
    """Whether `error` is Keras's failed download (it re-raises the URLError as Exception)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
