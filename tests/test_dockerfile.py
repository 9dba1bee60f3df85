"""The Dockerfile: lint, policy checks and static checks of what it declares.

The image itself is built and run by tests/test_image.py (buildah and podman), which replaced
the replay of the build stage's RUN steps in a venv that used to live here.

    .venv/bin/pytest tests/test_dockerfile.py
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from toolbox import checkov_bin

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def parse_env(args: str) -> dict[str, str]:
    out = {}
    for item in shlex.split(args):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def test_hadolint_clean_at_warning_level():
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_dockerfile_has_no_failed_checks():
    command = [checkov_bin(), f"--file={DOCKERFILE}", "--framework=dockerfile"]
    result = subprocess.run(
        [*command, "--skip-download", "-ojson"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 0
    assert summary["failed"] == 0, failed
    # A skip is allowed only with its reason written beside it.
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment"), check["check_id"]


def test_runtime_stage_is_non_root_and_runs_the_trainer():
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2, "multi-stage build expected"
    final = dict(stages[-1].instructions)
    user = final["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(final["ENTRYPOINT"]) == ["trainer"]
    assert any(k == "COPY" and a.startswith("--from=build") for k, a in stages[-1].instructions)
    env = parse_env(" ".join(a for k, a in stages[-1].instructions if k == "ENV"))
    # Everything the trainer writes lands on the Job's emptyDir volumes.
    assert env["HOME"].startswith("/tmp")
    assert env["KERAS_HOME"].startswith("/tmp")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_dockerignore_lets_through_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: ignore everything, then re-include"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    build = parse_dockerfile(DOCKERFILE.read_text())[-2]
    for keyword, args in build.instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert source.rstrip("/") in allowed, source
