"""The two distributions: the trainer wheel carries no test tool, the launcher wheel needs no TF.

Both wheels are built from this checkout with `pip wheel --no-deps`; the launcher's is
installed in a fresh venv (its dependencies from the package index) and run from an empty
directory, so nothing of the checkout can stand in for what the wheel lacks.

    .venv/bin/pytest tests/test_packaging.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Built from a copy: setuptools' in-tree build/ would keep modules that have since moved.
SKIP = shutil.ignore_patterns(".git", ".venv", ".tools", "build", "*.egg-info", "__pycache__")
# Shipped only under tests/: fault injection, bad-image and fault-plan factories, HTTP proxies.
TEST_TOOLS = ("httpproxy", "faults", "badimages", "kube_api_server", "fault_plan")


def build_wheel(project: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(project)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("source") / "streamtrain"
    shutil.copytree(ROOT, copy, ignore=SKIP, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def trainer_wheel(source, tmp_path_factory) -> Path:
    return build_wheel(source, tmp_path_factory.mktemp("trainer-wheel"))


@pytest.fixture(scope="module")
def launcher_wheel(source, tmp_path_factory) -> Path:
    return build_wheel(source / "scripts" / "launcher", tmp_path_factory.mktemp("launcher-wheel"))


def test_trainer_wheel_holds_the_trainer_and_no_test_tool_or_launcher(trainer_wheel):
    names = zipfile.ZipFile(trainer_wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert "trainer/cli.py" in modules
    assert all(n.startswith("trainer/") for n in modules), modules
    leaked = [n for n in modules if Path(n).stem in TEST_TOOLS or "/launcher/" in n]
    assert not leaked, leaked
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(trainer_wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    # The image installs `.[gpu]`: no Kubernetes client and no kubectl in it.
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("kubernetes", "kubectl"))], base


def test_launcher_wheel_ships_the_manifests_it_renders(launcher_wheel):
    names = set(zipfile.ZipFile(launcher_wheel).namelist())
    for path in (ROOT / "k8s").rglob("*"):
        if path.is_file():
            assert f"streamtrain_launcher/k8s/{path.relative_to(ROOT / 'k8s')}" in names, path
    assert not [n for n in names if n.startswith("trainer/")]


@pytest.mark.slow
def test_launcher_wheel_installs_alone_and_renders_without_tensorflow(launcher_wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(launcher_wheel)], check=True, capture_output=True, text=True)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    launch = str(venv / "bin" / "streamtrain-launch")
    shown = subprocess.run(
        [launch, "--help"], cwd=empty, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "--overlay" in shown.stdout
    rendered = subprocess.run(
        [
            launch,
            "--dry-run",
            "--overlay=multi-worker",
            "--workers=2",
            "--image=registry.example/streamtrain:v1",
            "--data=gs://bucket/data",
            "--output=gs://bucket/out",
            "--name=wheel-check",
        ],
        cwd=empty,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(empty)},
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d]
    assert "Job" in kinds, kinds
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for heavy in ("tensorflow", "keras", "numpy", "streamtrain=="):
        assert heavy not in listed, heavy


def test_the_launcher_builds_without_setuptools_warnings(source, tmp_path):
    # Its manifest folders are declared as packages: undeclared, setuptools printed a boxed
    # "Package would be ignored" warning for each of them on every install.
    launcher = str(source / "scripts" / "launcher")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), launcher],
        capture_output=True,
        text=True,
        check=True,
    )
    output = built.stdout + built.stderr
    assert "_Warning" not in output and "would be ignored" not in output, output[-3000:]
