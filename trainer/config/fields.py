"""The trainer's options: one frozen dataclass whose fields are the only description of them.

Every option is one field of `TrainConfig`. Its type annotation and its metadata (help text,
range, group) give the flag (`batch_size` -> `--batch-size`), the environment variable
(`TRAINER_BATCH_SIZE`), the config-file key (`batch_size`), `--help` and docs/configuration.md:

    table.py     each field as the flag, variable, type text and default it becomes
    validate.py  strings to typed values, ranges, URIs, rules across fields
    flags.py     the argparse flags and one-line usage errors
    load.py      precedence: flag > TRAINER_* > config file > AIP_* > default
    docs.py      docs/configuration.md (`python -m trainer.config.docs`)

Nothing here imports TensorFlow, so a bad configuration is reported before the slow import.

    cfg = build_config(["--data", "gs://bucket/images", "--output", "/tmp/run", "--epochs", "3"])
    cfg.batch_size       # 32
    cfg.checkpoint_dir   # "/tmp/run/checkpoints"
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from trainer.config.multi_worker import MultiWorkerOptions
from trainer.config.spec import (
    MODELS,
    Augment,
    ClassWeight,
    ImageSize,
    InputDtype,
    JitCompile,
    Keep,
    LogFormat,
    LrSchedule,
    MixedPrecision,
    OnCorrupt,
    Optimizer,
    Remainder,
    Resize,
    _opt,
)
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(MultiWorkerOptions):
    """A validated training configuration; build it with `build_config`.

    Constructing it directly also validates and normalizes every field (strings are parsed,
    `checkpoint_dir`/`tensorboard_dir`/`cache_dir` defaults are filled in), so
    `TrainConfig(**cfg.to_dict())` round-trips. File-system checks happen in `build_config` only.

    Past 250 lines on purpose: one field per option, and these fields are the single source of
    every flag, variable, config key and docs row; cutting the class would split that table.
    """

    # Data
    data: str = _opt(
        help="training images: gs://BUCKET/PREFIX or a local directory laid out as "
        "ROOT/CLASS/IMAGE, or a .csv or .jsonl manifest of uri,label lines (local or gs://)",
        group="Data",
        metavar="URI",
    )
    index: str | None = _opt(
        None,
        help="JSON file with the dataset index: loaded if it exists, else written after "
        "listing the data so later runs skip the listing (local or gs://)",
        group="Data",
        metavar="URI",
    )
    classes: str | None = _opt(
        None,
        help="comma-separated class names: fixes the classes and their label ids; every "
        "class folder or manifest label must be one of them (default: all found, sorted)",
        group="Data",
        metavar="A,B,...",
    )
    val_split: float = _opt(
        0.2,
        help="fraction of the images held out for validation; 0 trains on everything",
        group="Data",
        ge=0,
        lt=1,
    )
    seed: int = _opt(
        0,
        help="seed for the train/validation split, shuffling and weight initialization",
        group="Data",
        ge=0,
        le=2**32 - 1,
    )
    on_corrupt: OnCorrupt = _opt(  # noqa: RUF009
        "skip",
        help="an image that cannot be read or decoded: skip it (counted in the metrics) or "
        "fail with exit code 2",
        group="Data",
    )

    # Output
    output: str = _opt(
        help="where the model, metrics.json, checkpoints and TensorBoard logs go: a local "
        "directory or gs://BUCKET/PATH",
        group="Output",
        default_text="$AIP_MODEL_DIR, else required",
        metavar="URI",
    )
    checkpoint_dir: str | None = _opt(
        None,
        help="where checkpoints go; a restarted run resumes from the newest one here",
        group="Output",
        default_text="$AIP_CHECKPOINT_DIR, else OUTPUT/checkpoints",
        metavar="URI",
    )
    tensorboard_dir: str | None = _opt(
        None,
        help="where TensorBoard event files go; other files there are left as they are",
        group="Output",
        default_text="$AIP_TENSORBOARD_LOG_DIR, else OUTPUT/tensorboard",
        metavar="URI",
    )
    checkpoint_every: int = _opt(
        200, help="write a checkpoint every N training steps", group="Output", gt=0, metavar="N"
    )
    keep_checkpoints: int = _opt(
        3, help="keep the newest N checkpoints, delete older ones", group="Output", gt=0
    )
    log_format: LogFormat = _opt(  # noqa: RUF009
        "text",
        help="text lines, or json: one object per line with severity, message and the step's "
        "figures, which GKE turns into structured Cloud Logging entries",
        group="Output",
    )
    log_every: int = _opt(
        50,
        help="log one progress line every N steps (when stdout is not a terminal)",
        group="Output",
        gt=0,
        metavar="N",
    )
    stall_timeout_s: float = _opt(
        1800.0,
        help="end the run with exit code 7, naming where it is stuck, when no step, evaluation "
        "or checkpoint finished for this long (raised to 5x the slowest step seen); 0: never",
        group="Training",
        ge=0,
        metavar="SECONDS",
    )
    metrics_port: int | None = _opt(
        None,
        help="serve Prometheus metrics (step, images/s, data wait, ETA, storage and decode "
        "counters) on this port at /metrics; off when unset",
        group="Output",
        ge=1,
        le=65535,
        metavar="PORT",
    )
    min_val_accuracy: float | None = _opt(
        None,
        help="quality gate: exit with code 3 when the final validation accuracy is lower",
        group="Output",
        ge=0,
        le=1,
    )

    # Model
    model: str = _opt(
        "small_cnn",
        help="model architecture",
        group="Model",
        choices=tuple(MODELS),
        metavar="NAME",
    )
    init_weights: str | None = _opt(
        None,
        help="start from these weights: a .keras model or .weights.h5 file (local or gs://)",
        group="Model",
        metavar="URI",
    )
    image_size: ImageSize = _opt(  # noqa: RUF009
        (128, 128),
        help="height and width images are resized to: N for a square, or H,W",
        group="Model",
        ge=8,
        le=4096,
        metavar="H,W",
    )
    resize: Resize = _opt(  # noqa: RUF009
        "squash",
        help="how an image meets --image-size, the same in training, evaluation and the "
        "export: squash stretches it, crop keeps the aspect ratio and cuts the centre, pad "
        "keeps it and fills the borders with black",
        group="Model",
    )
    weights: str = _opt(
        "none",
        help="backbone weights under a new classification head: none (random), imagenet "
        "(the weights Keras publishes, downloaded by Keras), or a .weights.h5, .h5 or "
        ".keras file (local or gs://, for clusters without internet; a .keras model from a "
        "previous run gives its backbone)",
        group="Model",
        metavar="none|imagenet|URI",
    )
    freeze_epochs: int = _opt(
        0,
        help="train only the head for the first N epochs with the backbone frozen, then "
        "fine-tune everything (needs --weights)",
        group="Model",
        ge=0,
        metavar="N",
    )

    # Training
    epochs: int = _opt(10, help="number of passes over the training data", group="Training", gt=0)
    batch_size: int = _opt(
        32, help="global batch size, split evenly across all replicas", group="Training", gt=0
    )
    learning_rate: float = _opt(
        1e-3, help="optimizer learning rate", group="Training", gt=0, metavar="LR"
    )
    scale_lr: bool = _opt(
        False, help="multiply the learning rate by the number of replicas", group="Training"
    )
    optimizer: Optimizer = _opt(  # noqa: RUF009
        "adam",
        help="optimizer: adam, adamw (decoupled weight decay) or sgd with momentum",
        group="Training",
    )
    momentum: float = _opt(0.9, help="momentum of --optimizer sgd", group="Training", ge=0, lt=1)
    weight_decay: float = _opt(
        0.0,
        help="decoupled weight decay, applied alike by every optimizer; 0 is off (adamw: "
        "Keras's 0.004)",
        group="Training",
        ge=0,
        lt=1,
    )
    lr_schedule: LrSchedule = _opt(  # noqa: RUF009
        "constant",
        help="learning rate over the run after the warmup: constant, cosine (decays to 0) or "
        "step (x0.1 after a third and after two thirds of the steps)",
        group="Training",
    )
    warmup_epochs: float | None = _opt(
        None,
        help="raise the learning rate linearly from 0 over the first N epochs",
        group="Training",
        ge=0,
        default_text="5 or a tenth of the epochs, the fewer, with --scale-lr; else 0",
        metavar="N",
    )
    label_smoothing: float = _opt(
        0.0, help="label smoothing of the cross-entropy loss", group="Training", ge=0, lt=1
    )
    clip_norm: float | None = _opt(
        None,
        help="clip the global gradient norm to this value",
        group="Training",
        gt=0,
        metavar="NORM",
    )
    class_weight: ClassWeight = _opt(  # noqa: RUF009
        "none",
        help="weigh each sample's loss: none, or balanced (inverse class frequency in the "
        "training split)",
        group="Training",
    )
    early_stopping_patience: int = _opt(
        0,
        help="stop when validation accuracy has not improved for N epochs; 0 never stops",
        group="Training",
        ge=0,
        metavar="N",
    )
    keep: Keep = _opt(  # noqa: RUF009
        "best",
        help="which weights are exported: the best epoch by validation accuracy, or the last",
        group="Training",
    )
    jit_compile: JitCompile = _opt(  # noqa: RUF009
        "auto", help="compile the training step with XLA: auto is on for GPUs", group="Training"
    )
    mixed_precision: MixedPrecision = _opt(  # noqa: RUF009
        "auto",
        help="mixed precision policy: auto picks one by device, off is float32",
        group="Training",
    )
    augment: Augment = _opt(  # noqa: RUF009
        "none",
        help="random augmentation inside the training step, drawn from (seed, step) so a "
        "resumed run draws the same: basic = random resized crop and horizontal flip; strong "
        "adds a small rotation and colour jitter. Never in evaluation or the export",
        group="Training",
    )
    deterministic: bool = _opt(
        False,
        help="enable TensorFlow op determinism for reproducible runs (slower)",
        group="Training",
    )
    trace_steps: bool = _opt(
        False,
        help="record a digest of every step's input batch in metrics.json (and checkpoints), "
        "to prove a resumed run saw the same samples in the same order",
        group="Training",
    )
    steps_per_execution: int = _opt(
        1,
        help="training steps per compiled call; more cuts per-step overhead",
        group="Training",
        gt=0,
        metavar="N",
    )
    max_steps_per_epoch: int | None = _opt(
        None,
        help="end each epoch after at most N steps (for smoke runs)",
        group="Training",
        gt=0,
        metavar="N",
    )
    remainder: Remainder = _opt(  # noqa: RUF009
        "pad",
        help="the last partial batch of an epoch: pad it to a full batch or drop it",
        group="Training",
    )

    # Devices
    cpu_replicas: int = _opt(
        1,
        help="without a GPU, split the CPU into N logical devices (one replica each)",
        group="Devices",
        ge=1,
        le=64,
        metavar="N",
    )
    expect_gpus: int = _opt(
        0,
        help="fail fast with exit code 4 when fewer GPUs are visible; 0 does not check",
        group="Devices",
        ge=0,
        metavar="N",
    )
    logical_gpus_per_gpu: int = _opt(
        1,
        help="split each GPU into N logical GPUs (one replica each), to exercise the "
        "multi-replica path on one card",
        group="Devices",
        ge=1,
        le=8,
        metavar="N",
    )

    # Input pipeline
    dtype: InputDtype = _opt(  # noqa: RUF009
        "uint8",
        help="dtype of the batches fed to the model; uint8 moves 4x fewer bytes to the device",
        group="Input pipeline",
    )
    fetch_threads: int | None = _opt(
        None,
        help="threads fetching images in parallel (default: 32 for gs://, which hides "
        "latency; 2 per CPU core for local files, where more only contend)",
        group="Input pipeline",
        ge=1,
        le=512,
        metavar="N",
    )
    decode_threads: int | None = _opt(
        None,
        help="with --decode-processes 0, at most this many images decode at once on threads "
        "(default: one per CPU core)",
        group="Input pipeline",
        ge=1,
        le=512,
        metavar="N",
    )
    decode_processes: int | None = _opt(
        None,
        help="decode in this many worker processes, which read the files themselves and "
        "return pixels through shared memory, off the trainer's GIL (default: one per CPU "
        "the container may use); 0 decodes on threads in the trainer process",
        group="Input pipeline",
        ge=0,
        le=512,
        metavar="N",
    )
    prefetch_batches: int = _opt(
        4,
        help="batches prepared ahead of the training step",
        group="Input pipeline",
        ge=1,
        le=64,
        metavar="N",
    )
    cache_dir: str | None = _opt(
        None,
        help="local directory for the on-disk cache of fetched images, or of downloaded "
        "shards for a packed --data; the trainer keeps them in its own subfolders "
        "streamtrain-bytes/ and streamtrain-shards/ and touches nothing else there",
        group="Input pipeline",
        default_text="TMPDIR/streamtrain-cache when --cache-size-mb > 0",
        metavar="DIR",
    )
    cache_size_mb: int = _opt(
        0,
        help="size limit of the image cache in MiB; 0 disables it (a packed --data still "
        "caches its shards, up to 20 GiB)",
        group="Input pipeline",
        ge=0,
        metavar="MB",
    )

    # Object storage
    storage_deadline_s: float = _opt(
        60.0,
        help="keep retrying a failing object-store request this long, then exit with code 5",
        group="Object storage",
        gt=0,
        metavar="SECONDS",
    )
    request_timeout_s: float = _opt(
        20.0,
        help="timeout of one object-store request",
        group="Object storage",
        gt=0,
        metavar="SECONDS",
    )

    # Multi-worker: normally set by the Kubernetes manifests through the environment.

    def __post_init__(self) -> None:
        # The field table and its converters are built from this class: imported at use.
        from trainer.config.table import FIELDS
        from trainer.config.validate import check_combinations, convert_or_raise

        # Normalize through the same converters the flags use, so a directly built config
        # (tests, TrainConfig(**metrics["config"])) obeys the same rules as a CLI one.
        for f in FIELDS:
            value = convert_or_raise(f, getattr(self, f.name), f.label)
            object.__setattr__(self, f.name, value)
        base = self.output.rstrip("/") or self.output
        if self.checkpoint_dir is None:
            object.__setattr__(self, "checkpoint_dir", f"{base}/checkpoints")
        if self.tensorboard_dir is None:
            object.__setattr__(self, "tensorboard_dir", f"{base}/tensorboard")
        if self.cache_size_mb > 0 and self.cache_dir is None:
            default = os.path.join(tempfile.gettempdir(), "streamtrain-cache")
            object.__setattr__(self, "cache_dir", default)
        check_combinations(self)

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, JSON-able (image_size becomes a list); for metrics.json."""
        from trainer.config.table import FIELDS

        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in FIELDS
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; an unknown key is a ConfigError naming the closest field."""
        from trainer.config.table import FIELD_BY_NAME
        from trainer.config.validate import suggest

        for key in values:
            if key not in FIELD_BY_NAME:
                raise ConfigError(f"unknown config key {key!r}{suggest(str(key), FIELD_BY_NAME)}")
        return cls(**values)
