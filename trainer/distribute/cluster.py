"""Where this process sits in a training cluster, from TF_CONFIG or a Kubernetes Indexed Job.

* ``TF_CONFIG`` set -> its worker list and task index;
* a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX`` with ``num_workers > 1``, the headless
  Service and the Job name) -> the worker list and the TF_CONFIG to set;
* otherwise a single worker.

Pure and free of TensorFlow, so the config step can validate the cluster before TF starts.

    cluster = cluster_from_env(os.environ, num_workers=2, worker_service="train-workers",
                               worker_port=2222, job_name="train-abc12")
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from trainer.errors import ConfigError


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
