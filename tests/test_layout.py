"""The package layout holds: data flows one way through the stages, and modules stay small.

Stages in order: config -> data -> distribute -> model -> train -> export. A module may import
its own stage and earlier ones (and the shared `errors` and `logs`), never a later stage or the
`dev` tools; `job` and `cli` compose every stage. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "trainer"
STAGES = ("config", "data", "pack", "distribute", "model", "train", "export")
SHARED = ("errors", "logs")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250
# Said in the class's docstring when it is longer on purpose.
LONG_ON_PURPOSE = "Past 250 lines on purpose"


def modules() -> list[Path]:
    return sorted(TRAINER.rglob("*.py"))


def trainer_imports(path: Path) -> set[str]:
    """The `trainer.X` packages or modules that `path` imports (X only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "trainer" and len(parts) > 1:
                found.add(parts[1])
    return found


def stage_of(path: Path) -> str:
    rel = path.relative_to(TRAINER)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    stage = stage_of(path)
    imported = trainer_imports(path) - set(SHARED) - {stage}
    if stage in SHARED:
        assert not imported, f"{stage} is shared by every stage and imports none: {imported}"
    elif stage in STAGES:
        later = {s for s in imported if s in STAGES and STAGES.index(s) > STAGES.index(stage)}
        assert not later, f"{path.name} ({stage}) imports later stages {later}"
        assert "dev" not in imported and "job" not in imported and "cli" not in imported


def test_test_tools_are_not_in_the_product() -> None:
    names = {p.stem for p in modules()}
    assert not names & {"faults", "httpproxy", "bench", "badimages", "kube_api_server"}


def test_the_layout_test_sees_a_backward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from trainer.export.outputs import Outputs\n")
    assert trainer_imports(bad) == {"export"}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: cut it"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_CLASS_LINES:
                assert LONG_ON_PURPOSE in (ast.get_docstring(node) or ""), (
                    f"{path.name}:{node.name} has {size} lines: cut it or say why"
                )
