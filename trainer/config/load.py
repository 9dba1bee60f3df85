"""Building a TrainConfig: flags > TRAINER_* > config file > AIP_* > defaults, then checks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trainer.config.fields import TrainConfig
from trainer.config.flags import make_parser
from trainer.config.spec import (
    AIP_DEFAULTS,
    CONFIG_ENV,
    CONFIG_SUFFIXES,
    ENV_PREFIX,
    MANIFEST_SUFFIXES,
)
from trainer.config.table import FIELD_BY_NAME, FIELDS, format_value
from trainer.config.validate import SCHEME, convert_or_raise, suggest
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)


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
        name: convert_or_raise(FIELD_BY_NAME[name], raw, label)
        for name, (raw, label, _) in chosen.items()
    }
    config = TrainConfig(**values)
    labels = {name: label for name, (_, label, _) in chosen.items()}
    _check_local_paths(config, labels)
    if config.cache_dir and config.cache_size_mb == 0:
        logger.info("--cache-dir is set but --cache-size-mb is 0, so the image cache is off")
    for f in FIELDS:
        source = chosen[f.name][2] if f.name in chosen else "default"
        logger.debug("config %s=%s (%s)", f.name, format_value(getattr(config, f.name)), source)
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
                "ignoring unknown environment variable %s%s", name, suggest(name, sorted(known))
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
    if SCHEME.match(path):
        raise ConfigError(f"{label}: the config file must be a local path, got {path}")
    suffix = Path(path).suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"{label}: the config file must end in {', '.join(CONFIG_SUFFIXES)}, got {path}"
        )
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{label}: {path} is over {MAX_CONFIG_BYTES >> 10} KiB; a config file holds "
                "a few option names and values"
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{label}: cannot read {path}: {reason}") from None
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_BoundedLoader)
        _check_size(data)
    except (RecursionError, _TooBig) as e:
        reason = str(e) if isinstance(e, _TooBig) else f"nested over {MAX_CONFIG_DEPTH} levels deep"
        raise ConfigError(
            f"{label}: {path} is {reason}; a config file is a flat mapping of option names "
            "to values"
        ) from None
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
                f"{label}: unknown key {key!r} in {path}{suggest(str(key), FIELD_BY_NAME)} "
                f"(keys are the flag names with underscores, e.g. batch_size)"
            )
    return data, path


# Bounds that keep a hostile config file from taking more than a moment: its size, its depth
# and its size once YAML aliases are expanded (a "billion laughs" file is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 100_000


class _TooBig(Exception):
    """A config file past one of the bounds above."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past MAX_CONFIG_DEPTH levels, before Python recursion."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise _TooBig(f"nested over {MAX_CONFIG_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_size(data: Any) -> None:
    """Counts values as if aliases were copies, stopping at MAX_CONFIG_VALUES."""
    seen, todo = 0, [(data, 0)]
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise _TooBig(f"over {MAX_CONFIG_VALUES} values once its aliases are expanded")
        if depth > MAX_CONFIG_DEPTH:
            raise _TooBig(f"nested over {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


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
    _check_not_nested(cfg, label)
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


def _check_not_nested(cfg: TrainConfig, label: Any) -> None:
    """Outputs inside a class-folder --data would be read back as training data (a run folder
    becomes a class, its confusion_matrix.png an image), and --data inside --output is where
    a run writes: both are refused, however the paths are spelled (SRC/., a//b, links)."""
    data = _location(cfg.data)
    places = {
        n: _location(getattr(cfg, n)) for n in ("output", "checkpoint_dir", "tensorboard_dir")
    }
    if not cfg.data.lower().rstrip("/").endswith(MANIFEST_SUFFIXES):
        for name, place in places.items():
            if _inside(place, data):
                raise ConfigError(
                    f"{label(name)}: {getattr(cfg, name)} is inside {label('data')} {cfg.data}, "
                    "where the next listing would read it as training data; write outside it"
                )
    if _inside(data, places["output"]):
        raise ConfigError(
            f"{label('data')}: {cfg.data} is inside {label('output')} {cfg.output}, which the "
            "run writes into; keep the data outside the run's output"
        )


def _location(uri: str) -> str:
    """`uri` spelled one way: gs:// paths normalised, local ones absolute with links resolved."""
    if _is_gcs(uri):
        bucket, _, path = uri[len("gs://") :].partition("/")
        return f"gs://{bucket}{os.path.normpath('/' + path).rstrip('/')}"
    return os.path.realpath(uri)


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


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
