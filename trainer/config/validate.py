"""Conversion and checks: strings to typed values, ranges, URIs, and rules across fields."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from trainer.config.fields import TrainConfig
from trainer.config.labels import label_problem, shown
from trainer.config.spec import BACKBONE_SUFFIXES, MANIFEST_SUFFIXES, WEIGHTS_SUFFIXES, ImageSize
from trainer.config.table import FIELD_BY_NAME, Field, format_value
from trainer.errors import ConfigError


class _Invalid(ValueError):
    """A value's problem, without the name of the option (the caller knows its source)."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
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
    "weights": True,
    "cache_dir": False,
}


def _got(raw: Any) -> str:
    if isinstance(raw, str) and (not raw or raw != raw.strip() or " " in raw):
        return repr(raw)
    return format_value(raw) if not isinstance(raw, list) else repr(raw)


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
        raise _Invalid(f"{invalid}{suggest(str(raw), f.choices)}")
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
    match = SCHEME.match(value)
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
    if (
        name == "weights"
        and lower not in ("none", "imagenet")
        and not lower.endswith(BACKBONE_SUFFIXES)
    ):
        raise _Invalid(
            f"must be none, imagenet or a {', '.join(BACKBONE_SUFFIXES)} file, got {value}"
        )
    if name == "init_weights" and not lower.endswith(WEIGHTS_SUFFIXES):
        raise _Invalid(
            f"must name a {' or '.join(WEIGHTS_SUFFIXES)} file (a Keras model or weights "
            f"saved by model.save / model.save_weights), got {value}"
        )


def convert_or_raise(f: Field, raw: Any, label: str) -> Any:
    try:
        return _convert(f, raw)
    except _Invalid as e:
        raise ConfigError(f"{label}: {e}") from None


def suggest(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def class_names(text: str, label: str) -> tuple[str, ...]:
    """Comma-separated class names, each trimmed; an empty or repeated one raises ConfigError."""
    names = tuple(name.strip() for name in text.split(","))
    if "" in names:
        raise ConfigError(f"{label} {text!r} has an empty class name; list names like a,b,c")
    for name in names:
        problem = label_problem(name)
        if problem:
            raise ConfigError(f"{label}: class name {shown(name)} {problem}; list names like a,b,c")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"{label} names {', '.join(repeated)} more than once; each class once, in label order"
        )
    return names


def check_combinations(cfg: TrainConfig) -> None:
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
    if cfg.freeze_epochs and cfg.weights == "none":
        raise ConfigError(
            f"{f['freeze_epochs'].label} {cfg.freeze_epochs} freezes a pretrained backbone, but "
            f"{f['weights'].label} is none; pass --weights imagenet or a weights file"
        )
    if cfg.freeze_epochs >= cfg.epochs:
        raise ConfigError(
            f"{f['freeze_epochs'].label} {cfg.freeze_epochs} leaves no epoch to fine-tune in "
            f"{f['epochs'].label} {cfg.epochs}; use fewer frozen epochs or more epochs"
        )
    if cfg.warmup_epochs is not None and cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(
            f"{f['warmup_epochs'].label} {format_value(cfg.warmup_epochs)} is longer than "
            f"{f['epochs'].label} {cfg.epochs}"
        )
    if cfg.early_stopping_patience and cfg.val_split == 0:
        raise ConfigError(
            f"{f['early_stopping_patience'].label} needs a validation set, but "
            f"{f['val_split'].label} is 0; set --val-split above 0"
        )
    if cfg.classes is not None:
        class_names(cfg.classes, f["classes"].label)
    if cfg.request_timeout_s > cfg.storage_deadline_s:
        raise ConfigError(
            f"{f['request_timeout_s'].label} {format_value(cfg.request_timeout_s)} exceeds "
            f"{f['storage_deadline_s'].label} {format_value(cfg.storage_deadline_s)}; one "
            f"request must fit in the retry deadline"
        )
