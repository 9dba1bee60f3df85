"""Listing a local folder without following symlinks, saying how many were skipped.

A symlink under the listed root is never followed: one that leads outside the root would
train on (or pack) files the user did not point at, one to an ancestor loops forever, and
one to a file or folder inside the root names files already listed under their real path,
so following it would list an image twice, possibly in two classes. A broken one names
nothing. One warning line counts them by kind, with an example of each.

    paths = list_files("/data/flowers", wanted=lambda name: name.endswith(".jpg"))
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SkippedLinks:
    """Symlinks not followed under one root, by kind, with the first of each kind."""

    root: str
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, kind: str, path: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.examples.setdefault(kind, path)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """One line: how many, of which kind, an example of each, and what to do."""
        kinds = "; ".join(
            f"{n} {kind} (e.g. {os.path.relpath(self.examples[kind], self.root)} -> "
            f"{_target(self.examples[kind])})"
            for kind, n in sorted(self.counts.items())
        )
        return (
            f"{self.root}: skipped {self.total} symlink{'s' * (self.total != 1)}, not followed: "
            f"{kinds}; copy or bind-mount the files into the folder to use them"
        )


def _target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _kind(path: str, real_root: str, wanted: bool) -> str | None:
    """Why the symlink at `path` is not followed; None when it would not be listed anyway."""
    target = os.path.realpath(path)
    if not os.path.isdir(target) and not wanted:
        return None
    if not os.path.exists(target):
        return "broken"
    if os.path.commonpath([target, real_root]) != real_root:
        return "leading outside it"
    parent = os.path.realpath(os.path.dirname(path))
    if os.path.isdir(target) and os.path.commonpath([target, parent]) == target:
        return "looping back to a folder above them"
    return "naming files also listed under their real path"


def list_files(
    root: str, *, wanted: Callable[[str], bool] = lambda name: True
) -> tuple[list[str], SkippedLinks]:
    """The files under `root` (absolute paths, sorted) whose name is `wanted`, and the
    symlinks skipped; `root` itself may be a symlink."""
    root = os.path.abspath(root)
    real_root = os.path.realpath(root)
    skipped = SkippedLinks(root)
    found: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    kind = _kind(entry.path, real_root, wanted(entry.name))
                    if kind:
                        skipped.add(kind, entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif wanted(entry.name):
                    found.append(entry.path)
    if skipped.total:
        logger.warning("%s", skipped.describe())
    return sorted(found), skipped
