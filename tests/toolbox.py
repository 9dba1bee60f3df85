"""Helpers for the tests that run the project's tools: kubectl kustomize, checkov.

Shared by tests/test_k8s_manifests.py, tests/test_dockerfile.py and the reliability suite's
security checks, so they all render and scan the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
# Targets: the oldest Kubernetes the manifests support, and the newest the validator knows.
OLDEST_K8S = "1.31.0"


def kustomize(path: Path) -> str:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def checkov_bin() -> str:
    path = os.environ.get("CHECKOV") or str(ROOT / ".tools/checkov/bin/checkov")
    if not Path(path).exists():
        pytest.fail(f"checkov not found at {path}: run `make tools`")
    return path


def render_all(out: Path) -> dict[str, Path]:
    """Every overlay and k8s/rbac rendered with `kubectl kustomize`, one YAML file each."""
    paths = {}
    for name in [*OVERLAYS, "rbac"]:
        source = K8S / "rbac" if name == "rbac" else K8S / "overlays" / name
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(kustomize(source))
    return paths
