"""The one place that decides which `tf.distribute` strategy runs.

* a multi-worker `Cluster` (trainer.distribute.cluster)  -> MultiWorkerMirroredStrategy;
* one or more GPUs                                     -> MirroredStrategy over all of them;
* CPU only                                             -> MirroredStrategy over ``cpu_replicas``
  logical CPU devices (so the same code path runs, and is tested, without GPUs).

    setup = make_strategy(cluster=cluster, cpu_replicas=2, expect_gpus=0)
    with setup.strategy.scope():
        ...
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from trainer.distribute.cluster import Cluster
from trainer.errors import GpuMissingError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class StrategySetup:
    strategy: Any  # tf.distribute.Strategy
    cluster: Cluster
    devices: list[str]
    gpus: int

    @property
    def name(self) -> str:
        # TF reports MultiWorkerMirroredStrategy as CollectiveAllReduceStrategy; say what we ran.
        return "MultiWorkerMirroredStrategy" if self.cluster.is_multi_worker else "MirroredStrategy"

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def local_replicas(self) -> int:
        return self.replicas // self.cluster.num_workers


def make_strategy(
    *,
    cluster: Cluster,
    cpu_replicas: int = 1,
    expect_gpus: int = 0,
    logical_gpus_per_gpu: int = 1,
    collective_timeout_s: float | None = None,
) -> StrategySetup:
    """Creates the strategy; must run before any other TensorFlow op touches a device."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) < expect_gpus:
        raise GpuMissingError(
            f"--expect-gpus {expect_gpus}: only {len(gpus)} GPU(s) visible; check the node has "
            "GPUs, the pod requests nvidia.com/gpu and the image has the CUDA libraries"
        )
    if gpus and logical_gpus_per_gpu > 1:
        # Splitting one GPU exercises the multi-replica path on a single card.
        memory = 4096
        for gpu in gpus:
            tf.config.set_logical_device_configuration(
                gpu,
                [tf.config.LogicalDeviceConfiguration(memory_limit=memory)] * logical_gpus_per_gpu,
            )
    elif not gpus and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )

    kind = "GPU" if gpus else "CPU"
    if cluster.is_multi_worker:
        if cluster.tf_config:
            os.environ["TF_CONFIG"] = cluster.tf_config
        # Ring collectives work everywhere; NCCL is picked automatically on GPUs.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
            # A dead peer must fail the run, not hang it until the Job's deadline.
            timeout_seconds=collective_timeout_s,
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    else:
        strategy = tf.distribute.MirroredStrategy(
            devices=[d.name for d in tf.config.list_logical_devices(kind)]
        )
    # Listed after the strategy starts: under MultiWorkerMirroredStrategy this includes the
    # other workers' devices.
    devices = [d.name for d in tf.config.list_logical_devices(kind)]
    return StrategySetup(strategy=strategy, cluster=cluster, devices=devices, gpus=len(gpus))
