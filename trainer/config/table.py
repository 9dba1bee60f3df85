"""The field table: each TrainConfig field as the flag, variable, type and text it becomes."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from trainer.config.fields import TrainConfig
from trainer.config.spec import ENV_PREFIX, ImageSize


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
        return format_value(self.default)


def _num(v: float | None) -> str:
    assert v is not None
    return str(int(v)) if float(v).is_integer() else str(v)


def format_value(value: Any) -> str:
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


FIELDS: tuple[Field, ...] = _field_table()
FIELD_BY_NAME: Mapping[str, Field] = types.MappingProxyType({f.name: f for f in FIELDS})
