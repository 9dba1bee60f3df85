"""Helpers for the tests that run the project's tools: kubectl kustomize, checkov.

Shared by tests/test_k8s_manifests.py, tests/test_dockerfile.py and the reliability suite's
security checks, so they all render and scan the same way.

A JobSet is a custom resource: kubernetes-validate has no schema for it and checkov does not
scan it. `jobs_of` therefore also returns a JobSet's worker template as the batch/v1 Job the
JobSet controller creates from it, `render_all` writes those next to each rendering (so a
checkov scan of the directory covers the JobSet's pods), and tests/schemas/ holds the JobSet
CRD's schema for check-jsonschema, and the PodMonitoring CRD's (GKE Managed Prometheus,
components/metrics): CRD_SCHEMAS maps each custom kind to its schema.
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
# 1.31 has every Job field the manifests use: podReplacementPolicy and successPolicy are beta
# there and on by default (successPolicy is GA from 1.33).
OLDEST_K8S = "1.31.0"
SCHEMAS = ROOT / "tests" / "schemas"
JOBSET_SCHEMA = SCHEMAS / "jobset.x-k8s.io_v1alpha2.json"
PODMONITORING_SCHEMA = SCHEMAS / "monitoring.googleapis.com_v1_podmonitoring.json"
CRD_SCHEMAS = {"JobSet": JOBSET_SCHEMA, "PodMonitoring": PODMONITORING_SCHEMA}
# The GKE components, each rendered on top of the base with the components it needs, as a
# Job and, through components/jobset, as a JobSet: (name, components before params, params).
COMPONENT_RENDERS = {
    "gcsfuse": (["gke", "gcsfuse"], {"DATA": "/data/datasets/flowers"}),
    "spot": (["gke", "spot"], {}),
    "flex-start": (["gke", "kueue", "flex-start"], {}),
    "metrics": (["gke", "metrics"], {}),
    "metrics-jobset": (["gke", "jobset", "metrics"], {}),
    "jobset-gke-all": (
        ["gke", "jobset", "spot", "gcsfuse", "kueue", "flex-start"],
        {"DATA": "/data/datasets/flowers"},
    ),
}


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


def jobs_of(docs: list[dict]) -> list[dict]:
    """The rendering's Jobs, and each JobSet replicated Job as the Job JobSet makes of it."""
    jobs = by_kind(docs, "Job")
    for jobset in by_kind(docs, "JobSet"):
        meta = jobset["metadata"]
        for rjob in jobset["spec"]["replicatedJobs"]:
            template = rjob["template"]
            jobs.append(
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {
                        "name": f"{meta['name']}-{rjob['name']}-0",
                        "namespace": meta.get("namespace", "default"),
                        "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                        # The JobSet's checkov skips (with their reasons) hold for its Jobs.
                        "annotations": {
                            k: v
                            for k, v in (meta.get("annotations") or {}).items()
                            if k.startswith("checkov.io/")
                        },
                    },
                    "spec": template["spec"],
                }
            )
    return jobs


def kustomize_with(components: list[str], params: dict[str, str], workdir: Path) -> str:
    """`kubectl kustomize` of the base with `components` and then params, parameters merged
    into trainer-params the documented way."""
    workdir.mkdir(parents=True, exist_ok=True)
    k8s = Path(os.path.relpath(K8S, workdir.resolve()))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(k8s / "base")],
        "components": [str(k8s / "components" / c) for c in [*components, "params"]],
    }
    if params:
        kustomization["configMapGenerator"] = [
            {
                "name": "trainer-params",
                "behavior": "merge",
                "literals": [f"{k}={v}" for k, v in params.items()],
            }
        ]
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(workdir)


def render_all(out: Path) -> dict[str, Path]:
    """Every overlay, each GKE component (COMPONENT_RENDERS, as "components/NAME") and k8s/rbac
    rendered with `kubectl kustomize`, one YAML file each; a rendering with a JobSet also gets
    NAME.jobset-jobs.yaml beside it (not in the result), its Jobs as `jobs_of` gives them."""
    paths = {}
    for name in [*OVERLAYS, "rbac"]:
        source = K8S / "rbac" if name == "rbac" else K8S / "overlays" / name
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(kustomize(source))
    work = out.parent / f"{out.name}-work"
    for name, (components, params) in COMPONENT_RENDERS.items():
        paths[f"components/{name}"] = out / f"component-{name}.yaml"
        paths[f"components/{name}"].write_text(kustomize_with(components, params, work / name))
    for path in list(paths.values()):
        docs = docs_of(path.read_text())
        if by_kind(docs, "JobSet"):
            jobs = [j for j in jobs_of(docs) if j not in by_kind(docs, "Job")]
            path.with_suffix(".jobset-jobs.yaml").write_text(yaml.safe_dump_all(jobs))
    return paths
