"""The `trainer pack` flags → PackConfig, with one-line errors naming the flag (exit code 2)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from trainer.config.validate import class_names
from trainer.errors import ConfigError
from trainer.pack.writer import PackConfig

# Kubernetes sets this in every pod of an Indexed Job.
INDEX_ENV = "JOB_COMPLETION_INDEX"


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `trainer pack`."""
    parser.add_argument(
        "--source",
        required=True,
        metavar="URI",
        help="class folders or a .csv/.jsonl manifest, local or gs://",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="where the shards, index.json and _SUCCESS go (local or gs://)",
    )
    parser.add_argument(
        "--shard-size-mb",
        type=float,
        default=128.0,
        metavar="MB",
        help="close a shard once it holds this much (default 128)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=0,
        metavar="PX",
        help="re-encode images whose longer side is over PX (e.g. 2x the "
        "training size); 0 keeps the bytes as they are (default 0)",
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=0,
        metavar="PX",
        help="re-encode images whose shorter side is over PX to PX (e.g. 256 for 224 px "
        "training: decode cost follows pixels); with --max-side the smaller result wins; "
        "0: off (default 0)",
    )
    parser.add_argument(
        "--raw-max-pixels",
        type=int,
        default=0,
        metavar="N",
        help="store images of at most N pixels (after sizing) as raw RGB (.npy): about 10x "
        "a JPEG's bytes, but read without decoding (e.g. 90000 with --short-side 256); "
        "0: never (default 0)",
    )
    parser.add_argument(
        "--quality",
        type=int,
        default=90,
        metavar="Q",
        help="JPEG quality of re-encoded images, 1-100 (default 90)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="shuffle the samples with this seed before cutting shards, so that every shard "
        "holds every class (default 0)",
    )
    parser.add_argument(
        "--keep-order",
        action="store_true",
        help="pack in the discovered order (class folders, or the manifest's) instead",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="threads that read and re-encode (default: 2 per core)",
    )
    parser.add_argument(
        "--part",
        type=int,
        default=None,
        metavar="K",
        help=f"pack the K-th slice of the inputs (default ${INDEX_ENV} or 0)",
    )
    parser.add_argument(
        "--parts",
        type=int,
        default=1,
        metavar="N",
        help="how many slices the inputs are cut into (an Indexed Job's completions; default 1)",
    )
    parser.add_argument(
        "--classes", default=None, metavar="A,B,...", help="fix the class names and their order"
    )
    parser.add_argument(
        "--no-merge",
        action="store_true",
        help="do not write index.json even when every part is done",
    )
    parser.add_argument(
        "--merge-only",
        action="store_true",
        help="only merge the finished parts into index.json and _SUCCESS",
    )


def pack_config(namespace: argparse.Namespace, env: Mapping[str, str]) -> PackConfig:
    """Validate the flags; a bad one raises ConfigError naming it."""
    ns = namespace
    part = ns.part
    if part is None:
        raw = env.get(INDEX_ENV, "0")
        try:
            part = int(raw)
        except ValueError:
            raise ConfigError(f"{INDEX_ENV}={raw!r} is not an integer") from None
    if ns.parts < 1:
        raise ConfigError(f"--parts must be ≥ 1, got {ns.parts}")
    if not 0 <= part < ns.parts:
        raise ConfigError(f"--part {part} is not in [0, --parts {ns.parts})")
    if not ns.shard_size_mb > 0:
        raise ConfigError(f"--shard-size-mb must be > 0, got {ns.shard_size_mb}")
    if ns.max_side < 0:
        raise ConfigError(f"--max-side must be ≥ 0 (0 keeps the bytes), got {ns.max_side}")
    if ns.short_side < 0:
        raise ConfigError(f"--short-side must be ≥ 0 (0: off), got {ns.short_side}")
    if ns.raw_max_pixels < 0:
        raise ConfigError(f"--raw-max-pixels must be ≥ 0 (0: never), got {ns.raw_max_pixels}")
    if not 1 <= ns.quality <= 100:
        raise ConfigError(f"--quality must be in 1..100, got {ns.quality}")
    if ns.workers < 0:
        raise ConfigError(f"--workers must be ≥ 0, got {ns.workers}")
    if ns.source.rstrip("/") == ns.output.rstrip("/"):
        raise ConfigError("--output must differ from --source")
    for flag, value in (("--source", ns.source), ("--output", ns.output)):
        if value.startswith("gs://") and len(value) <= len("gs://"):
            raise ConfigError(f"{flag} {value!r} names no bucket")
    classes = class_names(ns.classes, "--classes") if ns.classes else None
    return PackConfig(
        source=ns.source,
        output=ns.output,
        shard_size_mb=ns.shard_size_mb,
        max_side=ns.max_side,
        short_side=ns.short_side,
        raw_max_pixels=ns.raw_max_pixels,
        quality=ns.quality,
        workers=ns.workers,
        part=part,
        parts=ns.parts,
        merge=not ns.no_merge,
        classes=classes,
        seed=ns.seed,
        keep_order=ns.keep_order,
    )
