"""The training job, stage by stage: config -> data -> distribute -> model -> train -> export.

    exit_code = run(build_config(["--data", "gs://b/flowers", "--output", "gs://b/runs/1"]))

Stock `model.fit` cannot train under MultiWorkerMirroredStrategy in Keras 3
(keras-team/keras#20585) and resumes only at epoch boundaries, so every strategy runs our own
loop (trainer.train.loop) over each worker's ImageSequence shard.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from trainer.data.counters import Counters
from trainer.data.storage import Storage, is_gcs
from trainer.distribute.cluster import Cluster, cluster_from_env
from trainer.distribute.peers import wait_for_peers
from trainer.distribute.strategy import StrategySetup
from trainer.errors import StorageNotFoundError, StoragePermissionError
from trainer.export.finished import complete_run
from trainer.export.outputs import Outputs
from trainer.export.report import finish
from trainer.train.augment import describe
from trainer.train.hooks import Hooks, NoHooks
from trainer.train.inputs import Inputs, build_inputs, load_data
from trainer.train.lease import OutputLease
from trainer.train.preemption import StopFlag

logger = logging.getLogger(__name__)


def run(config: Any, *, hooks: Hooks | None = None) -> int:
    """Trains as `config` says; returns the exit code (errors raise `TrainerError`)."""
    hooks = hooks or NoHooks()
    counters = Counters()
    storage = Storage(
        # The training and validation Sequences each run `fetch_threads` readers.
        concurrency=2 * (config.fetch_threads or 32),
        deadline_s=config.storage_deadline_s,
        request_timeout_s=config.request_timeout_s,
        counters=counters,
    )
    lease = None
    try:
        outputs = Outputs(config.output, storage=storage)
        cluster = find_cluster(config)
        data = load_data(config, storage)
        if cluster.is_chief:
            storage.check_writable(outputs.root)
            # One trainer per --output; other workers write nothing there.
            lease = OutputLease(outputs.root, storage=storage, job_name=config.job_name)
            lease.acquire()
            probe_gcs_dirs(config, storage)
        done = complete_run(config, outputs, storage, fingerprint=data.index.fingerprint())
        if done is not None:
            logger.info("%s", done)
            return 0
        # TensorFlow loads only now: bad configuration and data failed above within a second.
        setup = start_strategy(config, cluster)
        stop = StopFlag()
        stop.install()  # after the strategy: TF installs its own handler in multi-worker mode
        quarantine = outputs.uri(f"quarantine/worker-{cluster.task_index}.jsonl")
        inputs = build_inputs(
            config, data, setup, storage=storage, counters=counters, quarantine_uri=quarantine
        )
        try:
            log_summary(config, setup, inputs)
            from trainer.model.trainable import build_trainable
            from trainer.train.loop import TrainLoop

            trainable = build_trainable(
                config, setup, data.index, storage, steps_per_epoch=inputs.steps_per_epoch
            )
            if cluster.is_chief:
                outputs.begin()  # a rerun first withdraws the old _SUCCESS and BLESSED
            loop = TrainLoop(config, setup, inputs, trainable, storage, counters, hooks)
            result = loop.run(stop)
        finally:
            inputs.close()  # stop the input pipeline before exporting: nothing more to fetch
        return finish(
            config,
            setup=setup,
            inputs=inputs,
            trainable=trainable,
            result=result,
            outputs=outputs,
            counters=counters,
            hooks=hooks,
        )
    finally:
        if lease is not None:
            lease.release()
        with contextlib.suppress(Exception):
            storage.close()


def probe_gcs_dirs(config: Any, storage: Storage) -> None:
    """gs:// --checkpoint-dir and --tensorboard-dir are written to first after an epoch: a
    missing bucket or a refused write fails now (local ones were probed with the config)."""
    for flag, uri in (
        ("--checkpoint-dir (TRAINER_CHECKPOINT_DIR)", config.checkpoint_dir),
        ("--tensorboard-dir (TRAINER_TENSORBOARD_DIR)", config.tensorboard_dir),
    ):
        if is_gcs(uri) and not uri.startswith(config.output.rstrip("/") + "/"):
            try:
                storage.check_writable(uri)
            except (StorageNotFoundError, StoragePermissionError) as e:
                raise type(e)(f"{flag}: {e}") from None


def find_cluster(config: Any) -> Cluster:
    return cluster_from_env(
        os.environ,
        num_workers=config.num_workers,
        worker_service=config.worker_service,
        worker_port=config.worker_port,
        job_name=config.job_name,
    )


def start_strategy(config: Any, cluster: Cluster) -> StrategySetup:
    from trainer.distribute.strategy import make_strategy

    wait_for_peers(cluster, timeout_s=config.peer_wait_s)
    return make_strategy(
        cluster=cluster,
        cpu_replicas=config.cpu_replicas,
        expect_gpus=config.expect_gpus,
        logical_gpus_per_gpu=config.logical_gpus_per_gpu,
        collective_timeout_s=config.collective_timeout_s,
    )


def log_summary(config: Any, setup: StrategySetup, inputs: Inputs) -> None:
    data, cluster = inputs.data, setup.cluster
    logger.info("devices: %s (GPUs: %d)", ", ".join(setup.devices), setup.gpus)
    logger.info(
        "strategy: %s, replicas %d, workers %d (this is worker %d%s)",
        setup.name,
        setup.replicas,
        cluster.num_workers,
        cluster.task_index,
        ", chief" if cluster.is_chief else "",
    )
    logger.info(
        "dataset: %d objects (%d train, %d validation), %d classes: %s; fingerprint %s",
        len(data.index),
        len(data.train),
        len(data.val),
        data.index.num_classes,
        ", ".join(data.index.class_names[:20]),
        data.index.fingerprint(),
    )
    logger.info(
        "batch: global %d, per replica %d, per worker %d; %d steps per epoch, %d epochs",
        config.batch_size,
        inputs.per_replica,
        inputs.local_batch,
        inputs.steps_per_epoch,
        config.epochs,
    )
    logger.info("augmentation (--augment): %s", describe(config.augment))
