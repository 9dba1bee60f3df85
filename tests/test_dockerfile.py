"""The Dockerfile: lint, policy checks, and its install steps replayed without a Docker engine.

No engine runs here, so `test_image_python_environment_builds_and_runs_entrypoint` builds
the image's Python environment the way the Dockerfile does: it reads the Dockerfile, copies
what its COPY steps copy, and runs its RUN steps in a fresh venv under tmp_path, with
TF_VARIANT=cpu (tensorflow-cpu standing in for tensorflow[and-cuda]). A broken requirement
file or install command fails here.

    .venv/bin/pytest tests/test_dockerfile.py
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
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


def replay_build_stage(stage: Stage, *, root: Path, workdir: Path, venv: Path) -> dict[str, str]:
    """Runs the build stage's steps here; returns the environment they ran with."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    args = {}
    # Paths inside the image become paths under tmp_path.
    paths = {"/opt/venv": str(venv), "/src": str(workdir)}

    def localize(text: str) -> str:
        for image_path, local in paths.items():
            text = text.replace(image_path, local)
        return text

    ran_pip = 0
    for keyword, argument in stage.instructions:
        if keyword == "ARG":
            name, _, default = argument.partition("=")
            args[name] = default
        elif keyword == "ENV":
            for key, value in parse_env(argument).items():
                env[key] = localize(value.replace("$PATH", env["PATH"]))
        elif keyword == "WORKDIR":
            assert argument == "/src", "the replay maps the build WORKDIR /src"
        elif keyword == "COPY":
            *sources, dest = argument.split()
            for source in sources:
                src = root / source
                target = workdir / dest
                if src.is_dir():  # COPY dir/ dest/ copies the directory's contents
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(src, target, dirs_exist_ok=True, ignore=skip)
                else:
                    assert dest.endswith("/"), "file COPY steps copy into a directory"
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, target / src.name)
        elif keyword == "RUN":
            # The CPU wheel stands in for the CUDA one; pip's cache is allowed here (not in
            # the image) so that reruns do not download TensorFlow again.
            command = localize(argument).replace("--no-cache-dir", "")
            command = re.sub(r"^python ", f"{sys.executable} ", command)
            ran_pip += "pip install" in command
            run_env = env | {**args, "TF_VARIANT": "cpu"}
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=workdir,
                env=run_env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"RUN {argument}\n{result.stdout}\n{result.stderr}"
    assert ran_pip >= 2, "expected the requirements layer and the project install"
    return env


@pytest.mark.slow
def test_image_python_environment_builds_and_runs_entrypoint(tmp_path):
    stages = parse_dockerfile(DOCKERFILE.read_text())
    build = next(s for s in stages if s.name == "build")
    venv = tmp_path / "venv"
    workdir = tmp_path / "src"
    workdir.mkdir()
    replay_build_stage(build, root=ROOT, workdir=workdir, venv=venv)

    final_env = {}
    for keyword, argument in stages[-1].instructions:
        if keyword == "ENV":
            final_env.update(parse_env(argument))
    entrypoint = json.loads(dict(stages[-1].instructions)["ENTRYPOINT"])
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "KERAS_HOME": str(home / "keras"),
        "PYTHONDONTWRITEBYTECODE": final_env["PYTHONDONTWRITEBYTECODE"],
    }
    # Run from an empty directory so that the repo checkout cannot shadow the installed package.
    result = subprocess.run(
        [str(venv / "bin" / entrypoint[0]), "--help"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train" in result.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tensorflow, trainer; print(trainer.__file__)"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in installed.stdout
