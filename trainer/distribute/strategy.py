"""The one place that decides how training is distributed.

* ``TF_CONFIG`` set                              -> MultiWorkerMirroredStrategy;
* a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX`` with ``num_workers > 1``, the headless
  Service and the Job name) -> TF_CONFIG derived from it, then MultiWorkerMirroredStrategy;
* one or more GPUs                              -> MirroredStrategy over all of them;
* CPU only                                      -> MirroredStrategy over ``cpu_replicas`` logical
  CPU devices (so the same code path runs, and is tested, without GPUs).

`cluster_from_env` is pure and imports no TensorFlow, so the config step can validate the
cluster before TensorFlow starts.

    cluster = cluster_from_env(os.environ, num_workers=2, worker_service="train-workers",
                               worker_port=2222, job_name="train-abc12")
    setup = make_strategy(cluster=cluster, cpu_replicas=2, expect_gpus=0)
    with setup.strategy.scope():
        ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from trainer.errors import ConfigError, GpuMissingError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster; `workers == ()` means single worker."""

    workers: tuple[str, ...] = ()
    task_index: int = 0
    tf_config: str | None = None  # the TF_CONFIG to set, when derived here

    @property
    def num_workers(self) -> int:
        return max(1, len(self.workers))

    @property
    def is_multi_worker(self) -> bool:
        return len(self.workers) > 1

    @property
    def is_chief(self) -> bool:
        # Worker 0 plays chief: it alone writes shared outputs (TF's own convention too).
        return self.task_index == 0


def cluster_from_env(
    env: Mapping[str, str],
    *,
    num_workers: int = 1,
    worker_service: str | None = None,
    worker_port: int = 2222,
    job_name: str | None = None,
) -> Cluster:
    """Reads TF_CONFIG, or derives it from a Kubernetes Indexed Job's environment."""
    raw = env.get("TF_CONFIG")
    if raw:
        try:
            doc = json.loads(raw)
            workers = tuple(doc["cluster"]["worker"])
            task = doc["task"]
            if task["type"] != "worker":
                raise ValueError(f"task type {task['type']!r} (only 'worker' is supported)")
            index = int(task["index"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"TF_CONFIG: not a valid worker cluster spec ({e}); unset it or "
                'set {"cluster": {"worker": [...]}, "task": {"type": "worker", '
                '"index": N}}'
            ) from None
        if not 0 <= index < len(workers):
            raise ConfigError(f"TF_CONFIG: task index {index} not in [0, {len(workers)})")
        return Cluster(workers=workers, task_index=index)
    if num_workers <= 1:
        return Cluster()
    raw_index = env.get("JOB_COMPLETION_INDEX")
    if raw_index is None:
        raise ConfigError(
            f"--num-workers (TRAINER_NUM_WORKERS) is {num_workers} but "
            "JOB_COMPLETION_INDEX is unset; run as an Indexed Job or set TF_CONFIG"
        )
    if not worker_service or not job_name:
        raise ConfigError(
            "--worker-service (TRAINER_WORKER_SERVICE) and --job-name "
            "(TRAINER_JOB_NAME) are needed to find the other workers"
        )
    try:
        index = int(raw_index)
    except ValueError:
        raise ConfigError(f"JOB_COMPLETION_INDEX: not an integer: {raw_index!r}") from None
    if not 0 <= index < num_workers:
        raise ConfigError(
            f"JOB_COMPLETION_INDEX {index} not in [0, {num_workers}); "
            "completions and TRAINER_NUM_WORKERS must agree"
        )
    # Indexed Job pods are named <job>-<index> and, with `subdomain`, resolvable as
    # <job>-<index>.<service>.
    workers = tuple(f"{job_name}-{i}.{worker_service}:{worker_port}" for i in range(num_workers))
    tf_config = json.dumps(
        {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}
    )
    return Cluster(workers=workers, task_index=index, tf_config=tf_config)


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
