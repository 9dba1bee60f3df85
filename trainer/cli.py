"""The `trainer` command: `trainer train [options]` runs a training job, `trainer pack`
packs images into shards, `trainer version`.

    python -m trainer train --data gs://bucket/images --output gs://bucket/runs/1 --epochs 3
    python -m trainer train --help        # every option with its TRAINER_* variable
    python -m trainer version

Exit codes are those of trainer.errors.ExitCode: a TrainerError prints `error: <message>` as
one line on stderr and exits with its code; a usage error exits 2; Ctrl-C exits 130; a
read-only, full or over-quota disk (or a refused permission) naming its file exits 2 with one
line; anything else logs its traceback and exits 1. TensorFlow is imported only after the
configuration passed validation, so configuration mistakes are reported within a second.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence

from trainer import config as config_module
from trainer.errors import ExitCode, TrainerError, write_error
from trainer.logs import error_line, setup_logging
from trainer.train.hooks import Hooks

logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130  # the shell convention for SIGINT: 128 + 2


def _version() -> str:
    try:
        return importlib.metadata.version("streamtrain")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def make_parser() -> argparse.ArgumentParser:
    parser = config_module.ArgumentParser(
        prog="trainer",
        description="Train Keras image classifiers on images streamed from object storage.",
        epilog="Run `trainer train --help` for every training option.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="run a training job", **config_module.TRAIN_PARSER_OPTIONS
    )
    verbosity = train.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug logs; -vv includes libraries"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only"
    )
    config_module.add_arguments(train)
    pack = commands.add_parser(
        "pack",
        help="pack images into tar shards with an index (train on them with --data)",
        description="Pack a class-folder tree or a manifest into WebDataset-style tar shards "
        "and an index.json; resumable, _SUCCESS written last.",
        allow_abbrev=False,
    )
    pack.add_argument("-v", "--verbose", action="count", default=0, help="debug logs")
    from trainer.pack.command import add_pack_arguments

    add_pack_arguments(pack)
    commands.add_parser("version", help="print the trainer's version", allow_abbrev=False)
    return parser


def _pack(namespace: argparse.Namespace) -> int:
    from trainer.data.storage import Storage
    from trainer.pack.command import pack_config
    from trainer.pack.writer import merge_only, pack

    setup_logging(namespace.verbose)
    cfg = pack_config(namespace, os.environ)
    with Storage(concurrency=max(32, cfg.workers)) as storage:
        if namespace.merge_only:
            merge_only(cfg, storage)
        else:
            pack(cfg, storage)
    return ExitCode.OK


def _log_format(namespace: argparse.Namespace) -> str:
    """--log-format or TRAINER_LOG_FORMAT, known before the configuration is validated."""
    value = getattr(namespace, "log_format", None) or os.environ.get("TRAINER_LOG_FORMAT", "")
    return value.strip() if value.strip() in ("text", "json") else "text"


def _train(namespace: argparse.Namespace, hooks: Hooks | None) -> int:
    verbosity = -1 if namespace.quiet else namespace.verbose
    fmt = _log_format(namespace)
    setup_logging(verbosity, fmt=fmt)
    cfg = config_module.config_from_namespace(namespace, env=os.environ)
    if cfg.log_format != fmt:  # set in the config file
        setup_logging(verbosity, fmt=cfg.log_format)
    # Imported here, after validation: it pulls in TensorFlow, which takes seconds.
    from trainer.job import run

    return int(run(cfg, hooks=hooks))


def _report(error: TrainerError, fmt: str) -> int:
    """One line, no traceback: the message says what to fix."""
    message = " ".join(str(error).split()) or type(error).__name__
    sys.stderr.write(error_line(message, fmt))
    return int(error.exit_code)


def _unexpected(error: Exception, fmt: str) -> int:
    """A full or read-only disk under a write that did not go through Storage (TensorFlow,
    Keras, temporary files) is one line when the file is named; the rest is a bug."""
    known = write_error(error) if isinstance(error, OSError) else None
    if known is not None:
        return _report(known, fmt)
    logger.exception("the trainer crashed; this is a bug, please report it with this log")
    return int(ExitCode.CRASH)


def main(argv: Sequence[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """Run the command line; returns the process exit code. `hooks`: for tests only."""
    args = sys.argv[1:] if argv is None else list(argv)
    fmt = "json" if os.environ.get("TRAINER_LOG_FORMAT", "").strip() == "json" else "text"
    try:
        try:
            namespace = make_parser().parse_args(args)
        except SystemExit as e:  # --help / --version printed their text
            return e.code if isinstance(e.code, int) else ExitCode.OK
        if namespace.command == "version":
            sys.stdout.write(f"streamtrain {_version()}\n")
            return ExitCode.OK
        if namespace.command == "train":
            fmt = _log_format(namespace)
        return _pack(namespace) if namespace.command == "pack" else _train(namespace, hooks)
    except TrainerError as e:
        return _report(e, fmt)
    except KeyboardInterrupt:
        sys.stderr.write(error_line("interrupted", fmt))
        return EXIT_INTERRUPTED
    except Exception as e:
        return _unexpected(e, fmt)
