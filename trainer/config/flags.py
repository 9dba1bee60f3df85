"""The `trainer train` flags, generated from the field table, with one-line usage errors."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from typing import Any

from trainer.config.spec import CONFIG_ENV, EXIT_CODE_MEANINGS, GROUPS
from trainer.config.table import FIELDS
from trainer.config.validate import suggest
from trainer.errors import ConfigError


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
                if found := suggest(word, flags):
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
