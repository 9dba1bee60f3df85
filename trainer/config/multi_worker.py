"""The multi-worker options, a base of `TrainConfig` (trainer.config.fields) kept apart for size."""

from __future__ import annotations

import dataclasses

from trainer.config.spec import _opt


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiWorkerOptions:
    """Where the other workers are and how long to wait for them."""

    num_workers: int = _opt(
        1,
        help="worker pods training together; more than 1 uses MultiWorkerMirroredStrategy",
        group="Multi-worker",
        ge=1,
        le=4096,
        metavar="N",
    )
    worker_service: str | None = _opt(
        None,
        help="headless Service giving each worker pod a DNS name",
        group="Multi-worker",
        metavar="NAME",
    )
    worker_port: int = _opt(
        2222,
        help="port the workers connect to each other on",
        group="Multi-worker",
        ge=1,
        le=65535,
    )
    job_name: str | None = _opt(
        None,
        help="name of the Kubernetes Indexed Job; worker I is JOB_NAME-I.WORKER_SERVICE",
        group="Multi-worker",
        metavar="NAME",
    )
    collective_timeout_s: float = _opt(
        300.0,
        help="multi-worker only: a collective that waits this long for a peer fails the run "
        "with exit code 6 instead of hanging",
        group="Multi-worker",
        gt=0,
        metavar="SECONDS",
    )
    peer_wait_s: float = _opt(
        600.0,
        help="multi-worker only: before TensorFlow starts, wait this long for every peer to "
        "resolve and accept a connection, then exit with code 6 naming the missing one",
        group="Multi-worker",
        gt=0,
        metavar="SECONDS",
    )
