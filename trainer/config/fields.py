"""The trainer's configuration: one typed field table behind flags, variables, files and docs.

Every option is one field of the frozen dataclass `TrainConfig`. Its type annotation and its
metadata (help text, range, group) are the only description of the option: the flag
(`batch_size` -> `--batch-size`), the environment variable (`TRAINER_BATCH_SIZE`), the config-file
key (`batch_size`), `--help` and docs/configuration.md are all derived from them.

Precedence, highest first: flag, `TRAINER_*` variable, config file (`--config PATH` or
`TRAINER_CONFIG`, YAML or JSON), Vertex AI's `AIP_*` variables (output and the two directories
only), built-in default. Nothing here imports TensorFlow, so a bad configuration is reported
before the slow import.

    cfg = build_config(["--data", "gs://bucket/images", "--output", "/tmp/run", "--epochs", "3"])
    cfg.batch_size       # 32
    cfg.checkpoint_dir   # "/tmp/run/checkpoints"
    json.dumps(cfg.to_dict())

Regenerate the documentation after changing a field:

    python -m trainer.config.fields > docs/configuration.md
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import math
import os
import re
import sys
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from trainer.errors import ConfigError, ExitCode

logger = logging.getLogger(__name__)

# The model module builds these by name; keep names and descriptions here so the CLI can
# validate --model without importing Keras. Read-only: it is shared by every importer.
MODELS: Mapping[str, str] = types.MappingProxyType(
    {
        "small_cnn": "a few convolution blocks trained from scratch; for smoke tests and CPUs",
        "mobilenet_v3_small": "Keras MobileNetV3Small; the fastest pretrained-architecture model",
        "mobilenet_v3_large": "Keras MobileNetV3Large",
        "efficientnet_b0": "Keras EfficientNetB0",
        "resnet50": "Keras ResNet50; the slowest and largest",
    }
)

ENV_PREFIX = "TRAINER_"
CONFIG_ENV = "TRAINER_CONFIG"
MANIFEST_SUFFIXES = (".csv", ".jsonl")
WEIGHTS_SUFFIXES = (".keras", ".weights.h5")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

# Vertex AI custom training sets these; each is the default of one field.
AIP_DEFAULTS: Mapping[str, str] = types.MappingProxyType(
    {
        "output": "AIP_MODEL_DIR",
        "checkpoint_dir": "AIP_CHECKPOINT_DIR",
        "tensorboard_dir": "AIP_TENSORBOARD_LOG_DIR",
    }
)

# Shown in docs/configuration.md; the codes themselves live in trainer.errors.
EXIT_CODE_MEANINGS: Mapping[ExitCode, str] = types.MappingProxyType(
    {
        ExitCode.OK: "training finished (and passed the quality gate, if any)",
        ExitCode.CRASH: "unexpected error (a bug): the traceback is logged",
        ExitCode.BAD_INPUT: "bad configuration or input data: fix it, retrying will not help",
        ExitCode.QUALITY_GATE: "trained, but validation accuracy is below --min-val-accuracy",
        ExitCode.NO_GPU: "fewer GPUs visible than --expect-gpus",
        ExitCode.STORAGE_UNAVAILABLE: (
            "the object store kept failing past --storage-deadline-s: retry later"
        ),
        ExitCode.PEER_LOST: (
            "another worker of a multi-worker job was lost: restart the job, it resumes"
        ),
        ExitCode.TERMINATED: (
            "terminated (SIGTERM): a checkpoint was written, restarting resumes the run"
        ),
    }
)

ImageSize = tuple[int, int]
MixedPrecision = Literal["auto", "off", "bf16", "fp16"]
Remainder = Literal["pad", "drop"]
InputDtype = Literal["uint8", "float32"]
OnCorrupt = Literal["skip", "fail"]

# Group order in --help and in the docs.
GROUPS = (
    "Data",
    "Output",
    "Model",
    "Training",
    "Devices",
    "Input pipeline",
    "Object storage",
    "Multi-worker",
)


def _opt(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    group: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Sequence[str] = (),
    default_text: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field carrying everything the flag, env var, docs and validation need.

    It returns `dataclasses.field(...)`, which ruff's RUF009 cannot see through; hence the
    `noqa: RUF009` on fields whose type ruff does not know to be immutable.
    """
    assert group in GROUPS, group
    meta = {
        "help": help,
        "group": group,
        "gt": gt,
        "ge": ge,
        "lt": lt,
        "le": le,
        "choices": tuple(choices),
        "default_text": default_text,
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A validated training configuration; build it with `build_config`.

    Constructing it directly also validates and normalizes every field (strings are parsed,
    `checkpoint_dir`/`tensorboard_dir`/`cache_dir` defaults are filled in), so
    `TrainConfig(**cfg.to_dict())` round-trips. File-system checks happen in `build_config` only.
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
        help="where TensorBoard event files go",
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
    log_every: int = _opt(
        50,
        help="log one progress line every N steps (when stdout is not a terminal)",
        group="Output",
        gt=0,
        metavar="N",
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
    mixed_precision: MixedPrecision = _opt(  # noqa: RUF009
        "auto",
        help="mixed precision policy: auto picks one by device, off is float32",
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
        help="at most this many images decode at once (default: one per CPU core)",
        group="Input pipeline",
        ge=1,
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
        help="local directory for the on-disk cache of fetched images",
        group="Input pipeline",
        default_text="TMPDIR/streamtrain-cache when --cache-size-mb > 0",
        metavar="DIR",
    )
    cache_size_mb: int = _opt(
        0,
        help="size limit of the image cache in MiB; 0 disables the cache",
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

    def __post_init__(self) -> None:
        # Normalize through the same converters the flags use, so a directly built config
        # (tests, TrainConfig(**metrics["config"])) obeys the same rules as a CLI one.
        for f in FIELDS:
            value = _convert_or_raise(f, getattr(self, f.name), f.label)
            object.__setattr__(self, f.name, value)
        base = self.output.rstrip("/") or self.output
        if self.checkpoint_dir is None:
            object.__setattr__(self, "checkpoint_dir", f"{base}/checkpoints")
        if self.tensorboard_dir is None:
            object.__setattr__(self, "tensorboard_dir", f"{base}/tensorboard")
        if self.cache_size_mb > 0 and self.cache_dir is None:
            default = os.path.join(tempfile.gettempdir(), "streamtrain-cache")
            object.__setattr__(self, "cache_dir", default)
        _check_combinations(self)

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, JSON-able (image_size becomes a list); for metrics.json."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in FIELDS
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; an unknown key is a ConfigError naming the closest field."""
        for key in values:
            if key not in FIELD_BY_NAME:
                raise ConfigError(f"unknown config key {key!r}{_suggest(str(key), FIELD_BY_NAME)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Field:
    """One row of the field table, derived from a TrainConfig field."""

    name: str
    kind: str  # int, float, bool, str, choice, size
    optional: bool
    required: bool
    default: Any
    help: str
    group: str
    choices: tuple[str, ...]
    gt: float | None
    ge: float | None
    lt: float | None
    le: float | None
    default_text: str | None
    metavar: str | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def label(self) -> str:
        """How errors name the option when the value's source does not matter."""
        return f"{self.flag} ({self.env})"

    def describe(self) -> str:
        """What a valid value looks like, e.g. 'a positive integer'."""
        if self.kind == "size":
            return f"N or H,W with each side from {_num(self.ge)} to {_num(self.le)}"
        fixed = {
            "bool": "true or false",
            "choice": "one of " + ", ".join(self.choices),
            "str": "a non-empty string",
        }
        if self.kind in fixed:
            return fixed[self.kind]
        noun = "an integer" if self.kind == "int" else "a number"
        bounds = {
            k: v
            for k, v in (("gt", self.gt), ("ge", self.ge), ("lt", self.lt), ("le", self.le))
            if v is not None
        }
        if bounds == {"gt": 0}:
            return f"a positive {noun.split()[1]}"
        if bounds == {"ge": 0}:
            return f"a non-negative {noun.split()[1]}"
        if bounds.keys() == {"ge", "le"}:
            return f"{noun} from {_num(self.ge)} to {_num(self.le)}"
        return f"{noun} {self._bounds_text()}".rstrip()

    def _bounds_text(self) -> str:
        ops = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        return " and ".join(f"{op} {_num(v)}" for op, v in ops if v is not None)

    def type_text(self) -> str:
        """The type column of the docs."""
        text = {
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "str": "string",
            "choice": " \\| ".join(f"`{c}`" for c in self.choices),
            "size": "`N` or `H,W`",
        }[self.kind]
        if self.kind != "size" and self._bounds_text():
            text += ", " + self._bounds_text()
        if self.optional:
            text += ", optional"
        return text

    def default_display(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.required:
            return "required"
        if self.default is None:
            return "unset"
        return _format_value(self.default)


def _num(v: float | None) -> str:
    assert v is not None
    return str(int(v)) if float(v).is_integer() else str(v)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _field_table() -> tuple[Field, ...]:
    hints = typing.get_type_hints(TrainConfig)
    rows = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args and typing.get_origin(hint) is not Literal
        if optional:
            (hint,) = [a for a in args if a is not type(None)]
        choices = f.metadata["choices"]
        if typing.get_origin(hint) is Literal:
            kind, choices = "choice", typing.get_args(hint)
        elif choices:
            kind = "choice"
        elif hint == ImageSize:
            kind = "size"
        else:
            kind = {int: "int", float: "float", bool: "bool", str: "str"}[hint]
        required = f.default is dataclasses.MISSING
        rows.append(
            Field(
                name=f.name,
                kind=kind,
                optional=optional,
                required=required,
                default=None if required else f.default,
                help=f.metadata["help"],
                group=f.metadata["group"],
                choices=tuple(choices),
                gt=f.metadata["gt"],
                ge=f.metadata["ge"],
                lt=f.metadata["lt"],
                le=f.metadata["le"],
                default_text=f.metadata["default_text"],
                metavar=f.metadata["metavar"],
            )
        )
    return tuple(rows)


class _Invalid(ValueError):
    """A value's problem, without the name of the option (the caller knows its source)."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Extensions of files someone might pass as a manifest; only .csv and .jsonl are understood.
_NOT_MANIFEST = (
    ".json",
    ".ndjson",
    ".txt",
    ".tsv",
    ".parquet",
    ".tfrecord",
    ".tfrecords",
    ".gz",
    ".zip",
    ".tar",
    ".yaml",
    ".yml",
    ".jpg",
    ".jpeg",
    ".png",
)
_SCHEME_HINTS = {
    "s3": "copy the data to a gs:// bucket "
    "(gcloud storage cp -r s3://... gs://...) or mount it as a local directory",
    "gcs": "write the scheme as gs://",
    "file": "drop the file:// prefix and pass the local path",
    "http": "download the data or copy it to a gs:// bucket first",
    "https": "download the data or copy it to a gs:// bucket first",
}
# Fields holding a URI (local path or gs://) and whether gs:// is allowed for them.
_URI_FIELDS = {
    "data": True,
    "index": True,
    "output": True,
    "checkpoint_dir": True,
    "tensorboard_dir": True,
    "init_weights": True,
    "cache_dir": False,
}


def _got(raw: Any) -> str:
    if isinstance(raw, str) and (not raw or raw != raw.strip() or " " in raw):
        return repr(raw)
    return _format_value(raw) if not isinstance(raw, list) else repr(raw)


def _convert(f: Field, raw: Any) -> Any:
    """Parse and check one value from any source (flag/env string, YAML scalar, Python)."""
    if f.optional and (raw is None or (isinstance(raw, str) and not raw.strip())):
        return None
    invalid = _Invalid(f"must be {f.describe()}, got {_got(raw)}")
    if f.kind in ("int", "float"):
        value = _to_number(f, raw, invalid)
        if not _in_range(f, value):
            raise invalid
        return value
    if f.kind == "size":
        return _to_size(f, raw, invalid)
    text = raw.strip() if isinstance(raw, str) else None
    if f.kind == "bool":
        if isinstance(raw, bool):
            return raw
        if text is None or text.lower() not in _TRUE | _FALSE:
            raise invalid
        return text.lower() in _TRUE
    if f.kind == "choice" and text not in f.choices:
        raise _Invalid(f"{invalid}{_suggest(str(raw), f.choices)}")
    if not text:
        raise invalid
    if f.name in _URI_FIELDS:
        _check_uri(f.name, text, gcs_ok=_URI_FIELDS[f.name])
    return text


def _to_number(f: Field, raw: Any, invalid: _Invalid) -> int | float:
    # bool is an int subclass: `epochs: true` in YAML must not become 1.
    if isinstance(raw, bool):
        raise invalid
    if isinstance(raw, str):
        try:
            raw = int(raw.strip()) if f.kind == "int" else float(raw.strip())
        except ValueError:
            raise invalid from None
    if f.kind == "int":
        if not isinstance(raw, int):
            raise invalid
        return raw
    if not isinstance(raw, int | float) or not math.isfinite(raw):
        raise invalid
    return float(raw)


def _to_size(f: Field, raw: Any, invalid: _Invalid) -> ImageSize:
    if isinstance(raw, str):
        parts: list[Any] = re.split(r"[,x]", raw.strip().lower())
        try:
            parts = [int(p.strip()) for p in parts]
        except ValueError:
            raise invalid from None
    elif isinstance(raw, list | tuple):
        parts = list(raw)
    else:
        parts = [raw]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise invalid
    if not all(_in_range(f, p) for p in parts):
        raise invalid
    return (parts[0], parts[1])


def _in_range(f: Field, value: float) -> bool:
    return not (
        (f.gt is not None and value <= f.gt)
        or (f.ge is not None and value < f.ge)
        or (f.lt is not None and value >= f.lt)
        or (f.le is not None and value > f.le)
    )


def _check_uri(name: str, value: str, *, gcs_ok: bool) -> None:
    """Reject schemes the storage layer cannot read and malformed gs:// URIs (no I/O)."""
    match = _SCHEME.match(value)
    if match:
        scheme = match.group(1)
        if scheme.lower() == "gs" and scheme != "gs":
            raise _Invalid(f"write the scheme in lower case: gs://, got {value}")
        if scheme != "gs":
            hint = _SCHEME_HINTS.get(scheme.lower(), "copy it to a gs:// bucket or a local path")
            raise _Invalid(
                f"scheme {scheme}:// is not supported (only gs:// and local paths): {hint}"
            )
        if not gcs_ok:
            raise _Invalid(f"must be a local directory, got {value}")
        bucket = value[len("gs://") :].split("/", 1)[0]
        if not bucket:
            raise _Invalid(f"has no bucket name; use gs://BUCKET/PATH, got {value}")
        if not _BUCKET.fullmatch(bucket):
            raise _Invalid(
                f"{bucket!r} is not a valid bucket name (lower-case letters, digits, - _ .)"
            )
    lower = value.lower().rstrip("/")
    if name == "data" and lower.endswith(_NOT_MANIFEST):
        raise _Invalid(f"a manifest must be a {' or '.join(MANIFEST_SUFFIXES)} file, got {value}")
    if name == "init_weights" and not lower.endswith(WEIGHTS_SUFFIXES):
        raise _Invalid(
            f"must name a {' or '.join(WEIGHTS_SUFFIXES)} file (a Keras model or weights "
            f"saved by model.save / model.save_weights), got {value}"
        )


def _convert_or_raise(f: Field, raw: Any, label: str) -> Any:
    try:
        return _convert(f, raw)
    except _Invalid as e:
        raise ConfigError(f"{label}: {e}") from None


def _suggest(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _check_combinations(cfg: TrainConfig) -> None:
    """Rules across fields; each message names every option involved."""
    f = FIELD_BY_NAME
    if cfg.batch_size < cfg.cpu_replicas or cfg.batch_size % cfg.cpu_replicas:
        lower = cfg.batch_size // cfg.cpu_replicas * cfg.cpu_replicas
        options = " or ".join(str(v) for v in (lower, lower + cfg.cpu_replicas) if v > 0)
        raise ConfigError(
            f"{f['batch_size'].label} must be a multiple of {f['cpu_replicas'].label} so every "
            f"replica gets the same share, got {cfg.batch_size} for {cfg.cpu_replicas} "
            f"replicas; use {options}"
        )
    replicas = cfg.cpu_replicas * cfg.num_workers
    if cfg.batch_size % replicas:
        raise ConfigError(
            f"{f['batch_size'].label} must be a multiple of {f['num_workers'].label} x "
            f"{f['cpu_replicas'].label} = {replicas}, got {cfg.batch_size}"
        )
    if cfg.cpu_replicas > 1 and cfg.expect_gpus > 0:
        raise ConfigError(
            f"{f['cpu_replicas'].label} splits the CPU for runs without a GPU, which conflicts "
            f"with {f['expect_gpus'].label} {cfg.expect_gpus}; drop one of them"
        )
    if cfg.min_val_accuracy is not None and cfg.val_split == 0:
        raise ConfigError(
            f"{f['min_val_accuracy'].label} needs a validation set, but {f['val_split'].label} "
            f"is 0; set --val-split above 0 or drop the quality gate"
        )
    if cfg.num_workers > 1 and not (cfg.worker_service and cfg.job_name):
        raise ConfigError(
            f"{f['num_workers'].label} {cfg.num_workers} needs {f['worker_service'].label} and "
            f"{f['job_name'].label} to find the other workers; the k8s manifests set them"
        )
    if cfg.request_timeout_s > cfg.storage_deadline_s:
        raise ConfigError(
            f"{f['request_timeout_s'].label} {_format_value(cfg.request_timeout_s)} exceeds "
            f"{f['storage_deadline_s'].label} {_format_value(cfg.storage_deadline_s)}; one "
            f"request must fit in the retry deadline"
        )


FIELDS: tuple[Field, ...] = _field_table()
FIELD_BY_NAME: Mapping[str, Field] = types.MappingProxyType({f.name: f for f in FIELDS})


# --- Command line -------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a one-line ConfigError instead of a usage block."""

    def error(self, message: str) -> typing.NoReturn:
        prog, hint = self.prog, ""
        words = message.split(":", 1)[1].split() if ":" in message else []
        if message.startswith("unrecognized arguments:") and words:
            # The top-level parser reports a subcommand's leftovers: search every parser.
            word = words[0].split("=", 1)[0]
            for parser in self._parsers():
                flags = [a for a in parser._option_string_actions if a.startswith("--")]
                if found := _suggest(word, flags):
                    prog, hint = parser.prog, found
                    break
        raise ConfigError(f"{message}{hint} (see {prog} --help)")

    def _parsers(self) -> typing.Iterator[argparse.ArgumentParser]:
        """This parser, then its subcommands' parsers (depth first)."""
        yield self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from sub._parsers() if isinstance(sub, ArgumentParser) else (sub,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per field; unset flags stay absent from the namespace."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"YAML or JSON file of option: value pairs (keys as in this list without "
        f"the leading --, dashes as underscores) [{CONFIG_ENV}]",
    )
    groups = {g: parser.add_argument_group(g) for g in GROUPS}
    for f in FIELDS:
        # Choices show in the metavar unless it is set (--model's list is too long for it).
        listed = f.kind == "choice" and f.metavar
        extra = f"; one of: {', '.join(f.choices)}" if listed else ""
        text = f"{f.help}{extra} [{f.env}; default: {f.default_display()}]"
        group = groups[f.group]
        if f.kind == "bool":
            group.add_argument(
                f.flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            metavar = f.metavar or ("{" + ",".join(f.choices) + "}" if f.choices else "N")
            if f.kind == "float" and not f.metavar:
                metavar = "X"
            group.add_argument(
                f.flag, dest=f.name, metavar=metavar, default=argparse.SUPPRESS, help=text
            )


def make_parser(prog: str = "trainer train") -> ArgumentParser:
    """The `train` command's parser; the CLI builds the same one as a subcommand."""
    parser = ArgumentParser(prog=prog, **TRAIN_PARSER_OPTIONS)
    add_arguments(parser)
    return parser


_EPILOG = (
    "Each option is taken from, highest precedence first: its flag, its TRAINER_* environment\n"
    "variable, the config file (--config or TRAINER_CONFIG), Vertex AI's AIP_MODEL_DIR,\n"
    "AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (for --output, --checkpoint-dir and\n"
    "--tensorboard-dir), then the default.\n\nExit codes: "
    + ", ".join(f"{int(code)} {code.name.lower().replace('_', ' ')}" for code in EXIT_CODE_MEANINGS)
    + ".\nSee docs/configuration.md."
)
# Keyword arguments for the `train` ArgumentParser (shared with the CLI's subparser).
TRAIN_PARSER_OPTIONS: Mapping[str, Any] = types.MappingProxyType(
    {
        "usage": "trainer train --data URI --output URI [options]",
        "description": "Train an image classifier on images streamed from gs:// or a local "
        "directory.",
        "epilog": _EPILOG,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
        "allow_abbrev": False,
    }
)


# --- Building a config --------------------------------------------------------------------


def build_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> TrainConfig:
    """Parse the `train` flags in argv (None: no flags), layer env/file/defaults, validate.

    Raises ConfigError with a one-line message naming the flag and its variable.
    """
    namespace = make_parser().parse_args(list(argv or []))
    return config_from_namespace(namespace, env=os.environ if env is None else env)


def config_from_namespace(namespace: argparse.Namespace, *, env: Mapping[str, str]) -> TrainConfig:
    """The second half of `build_config`, for a CLI that parsed the flags with `add_arguments`."""
    _warn_unknown_env(env)
    file_values, file_path = _load_config_file(namespace, env)
    chosen: dict[str, tuple[Any, str, str]] = {}  # name -> (raw value, label, source)
    for f in FIELDS:
        aip = AIP_DEFAULTS.get(f.name)
        if hasattr(namespace, f.name):
            chosen[f.name] = (getattr(namespace, f.name), f.label, "flag")
        elif env.get(f.env, "").strip():
            chosen[f.name] = (env[f.env], f"{f.env} ({f.flag})", "env")
        elif f.name in file_values:
            label = f"{f.name} in {file_path} ({f.flag}, {f.env})"
            chosen[f.name] = (file_values[f.name], label, "file")
        elif aip and env.get(aip, "").strip():
            chosen[f.name] = (env[aip], f"{aip} ({f.flag}, {f.env})", "AIP")
    for f in FIELDS:
        if f.required and f.name not in chosen:
            raise ConfigError(f"{f.label}: required; {_MISSING_HINTS[f.name]}")
    values = {
        name: _convert_or_raise(FIELD_BY_NAME[name], raw, label)
        for name, (raw, label, _) in chosen.items()
    }
    config = TrainConfig(**values)
    labels = {name: label for name, (_, label, _) in chosen.items()}
    _check_local_paths(config, labels)
    if config.cache_dir and config.cache_size_mb == 0:
        logger.info("--cache-dir is set but --cache-size-mb is 0, so the image cache is off")
    for f in FIELDS:
        source = chosen[f.name][2] if f.name in chosen else "default"
        logger.debug("config %s=%s (%s)", f.name, _format_value(getattr(config, f.name)), source)
    return config


_MISSING_HINTS = {
    "data": "pass gs://BUCKET/PREFIX, a local directory of class folders, or a .csv/.jsonl "
    "manifest",
    "output": "pass a local directory or gs://BUCKET/PATH (on Vertex AI, AIP_MODEL_DIR sets it)",
}


def _warn_unknown_env(env: Mapping[str, str]) -> None:
    known = {f.env for f in FIELDS} | {CONFIG_ENV}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            logger.warning(
                "ignoring unknown environment variable %s%s", name, _suggest(name, sorted(known))
            )


def _load_config_file(
    namespace: argparse.Namespace, env: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    if getattr(namespace, "config", None):
        path, label = namespace.config, "--config (TRAINER_CONFIG)"
    elif env.get(CONFIG_ENV, "").strip():
        path, label = env[CONFIG_ENV].strip(), f"{CONFIG_ENV} (--config)"
    else:
        return {}, ""
    if _SCHEME.match(path):
        raise ConfigError(f"{label}: the config file must be a local path, got {path}")
    suffix = Path(path).suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"{label}: the config file must end in {', '.join(CONFIG_SUFFIXES)}, got {path}"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{label}: cannot read {path}: {reason}") from None
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{label}: {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot parse"
        raise ConfigError(f"{label}: {path} is not valid YAML: {problem}{where}") from None
    if data is None:
        return {}, path
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: {path} must hold a mapping of option names to values, "
            f"got a {type(data).__name__}"
        )
    for key in data:
        if key not in FIELD_BY_NAME:
            raise ConfigError(
                f"{label}: unknown key {key!r} in {path}{_suggest(str(key), FIELD_BY_NAME)} "
                f"(keys are the flag names with underscores, e.g. batch_size)"
            )
    return data, path


def _check_local_paths(cfg: TrainConfig, labels: Mapping[str, str]) -> None:
    """File-system checks; the write probes come last because they create directories."""

    def label(name: str) -> str:
        return labels.get(name, FIELD_BY_NAME[name].label)

    if not _is_gcs(cfg.data):
        path = Path(cfg.data)
        if not path.exists():
            raise ConfigError(
                f"{label('data')}: {cfg.data} does not exist; {_MISSING_HINTS['data']}"
            )
        if path.is_file() and not cfg.data.lower().endswith(MANIFEST_SUFFIXES):
            raise ConfigError(
                f"{label('data')}: {cfg.data} is a file but not a "
                f"{' or '.join(MANIFEST_SUFFIXES)} manifest; pass a manifest or a directory"
            )
    if cfg.init_weights and not _is_gcs(cfg.init_weights) and not Path(cfg.init_weights).is_file():
        raise ConfigError(f"{label('init_weights')}: {cfg.init_weights} is not a file")
    if cfg.index and not _is_gcs(cfg.index):
        index = Path(cfg.index)
        if index.exists() and not index.is_file():
            raise ConfigError(f"{label('index')}: {cfg.index} exists but is not a file")
        if not index.exists():
            _probe_writable(str(index.parent), label("index"))
    for name in ("output", "checkpoint_dir", "tensorboard_dir"):
        value = getattr(cfg, name)
        if not _is_gcs(value):
            _probe_writable(value, label(name))
    if cfg.cache_size_mb > 0 and cfg.cache_dir:
        _probe_writable(cfg.cache_dir, label("cache_dir"))


def _is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def _probe_writable(directory: str, label: str) -> None:
    """Create the directory and a file in it: the only reliable test (root ignores modes)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{label}: cannot create directory {directory}: {e.strerror or e}; "
            f"pass a writable local directory or gs://BUCKET/PATH"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{label}: cannot write to {directory}: {e.strerror or e}; "
            f"pass a writable local directory or gs://BUCKET/PATH"
        ) from None


# --- Documentation ------------------------------------------------------------------------


def config_markdown() -> str:
    """docs/configuration.md, generated from the field table (a test keeps them equal)."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated from the field table in trainer/config/fields.py; do not edit by hand.",
        "     Regenerate: .venv/bin/python -m trainer.config.fields > docs/configuration.md -->",
        "",
        "`python -m trainer train [options]` (or the `trainer train` console script) reads one",
        "typed configuration. Every option has a flag, an environment variable and a config-file",
        "key, all derived from one field name: `batch_size` is `--batch-size`,",
        "`TRAINER_BATCH_SIZE` and `batch_size:`. The configuration is validated before TensorFlow",
        "is imported, so a mistake fails within a second with exit code 2 and one line naming",
        "the option, e.g. `error: --epochs (TRAINER_EPOCHS): must be a positive integer, got 0`.",
        "",
        "## Precedence",
        "",
        "Highest first:",
        "",
        "1. the flag (`--epochs 5`);",
        "2. the environment variable (`TRAINER_EPOCHS=5`); an empty variable counts as unset;",
        "3. the config file named by `--config PATH` or `TRAINER_CONFIG`: a YAML (`.yaml`,",
        "   `.yml`) or JSON (`.json`) mapping of field names to values; an unknown key is an",
        "   error;",
        "4. Vertex AI's `AIP_*` variables, for the three options they cover (below);",
        "5. the default.",
        "",
        "Booleans accept `--flag`/`--no-flag`, and `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`",
        "in variables. An unknown `TRAINER_*` variable is ignored with a warning naming the",
        "closest known one. Relative paths are relative to the working directory.",
        "",
        "```yaml",
        "# train.yaml: python -m trainer train --config train.yaml --epochs 3",
        "data: gs://my-bucket/flowers",
        "output: gs://my-bucket/runs/flowers-1",
        "model: mobilenet_v3_small",
        "image_size: [224, 224]",
        "batch_size: 64",
        "scale_lr: true",
        "```",
        "",
        "`-v` (debug logs) and `-q` (warnings and errors only) are command-line only.",
        "",
        "## Options",
    ]
    for group in GROUPS:
        out += [
            "",
            f"### {group}",
            "",
            "| Flag | Environment variable | Type | Default | Meaning |",
            "|---|---|---|---|---|",
        ]
        for f in (f for f in FIELDS if f.group == group):
            flag = f"`{f.flag}`" + (f" / `--no-{f.flag[2:]}`" if f.kind == "bool" else "")
            meaning = f.help[0].upper() + f.help[1:] + "."
            if f.name == "model":
                meaning += " " + "; ".join(f"`{n}`: {d}" for n, d in MODELS.items()) + "."
            out.append(
                f"| {flag} | `{f.env}` | `{f.name}` | {f.type_text()} | "
                f"{_md(f.default_display())} | {_md(meaning)} |"
            )
    out += [
        "",
        "The multi-worker options are normally set by the Kubernetes manifests through the",
        "environment. `JOB_COMPLETION_INDEX` (set by Kubernetes for an Indexed Job) and",
        "`TF_CONFIG` are read by the distribution strategy code, not by this configuration.",
        "",
        "## Rules across options",
        "",
        "- `--batch-size` is the global batch: a multiple of `--cpu-replicas` x `--num-workers`.",
        "- `--cpu-replicas` above 1 and `--expect-gpus` above 0 exclude each other.",
        "- `--min-val-accuracy` needs `--val-split` above 0.",
        "- `--num-workers` above 1 needs `--worker-service` and `--job-name`.",
        "- `--request-timeout-s` may not exceed `--storage-deadline-s`.",
        "- `--data`, `--output`, `--checkpoint-dir`, `--tensorboard-dir`, `--index` and",
        "  `--init-weights` take `gs://BUCKET/PATH` or a local path; other schemes (`s3://`,",
        "  `https://`, ...) are rejected. A manifest must end in `.csv` or `.jsonl`.",
        "- A local `--data` and `--init-weights` must exist; local output directories are",
        "  created and probed with a test file before training starts.",
        "",
        "## Vertex AI",
        "",
        "Vertex AI custom training sets these variables; each one is the default of an option",
        "(the option's flag, `TRAINER_*` variable or config-file key still wins).",
        "",
        "| Variable | Default of |",
        "|---|---|",
    ]
    out += [f"| `{var}` | `{FIELD_BY_NAME[name].flag}` |" for name, var in AIP_DEFAULTS.items()]
    out += [
        "",
        "## Exit codes",
        "",
        "| Code | Meaning |",
        "|---|---|",
    ]
    out += [f"| {int(code)} | {_md(text)} |" for code, text in EXIT_CODE_MEANINGS.items()]
    return "\n".join(out) + "\n"


_TABLE_HEADER = "| Flag | Environment variable | Config key | Type | Default | Meaning |"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(config_markdown())
