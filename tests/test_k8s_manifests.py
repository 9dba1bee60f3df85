"""k8s/: every overlay renders with kubectl kustomize, validates strictly against Kubernetes
1.31 and the newest schema kubernetes-validate knows, passes checkov, and implements the
trainer's contract (exit codes, security context, volumes). The launcher's rendering equals
`kubectl kustomize` of the same parameters set the documented way.

    .venv/bin/pytest tests/test_k8s_manifests.py
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from toolbox import (
    BIN,
    K8S,
    KUBECTL,
    OLDEST_K8S,
    OVERLAYS,
    by_kind,
    checkov_bin,
    docs_of,
    kustomize,
)

from streamtrain_launcher.cli import launch
from streamtrain_launcher.options import LABEL_PREFIX


def newest_validator_version() -> str:
    import kubernetes_validate.utils as kv_utils

    return kv_utils.latest_version()


def validate_strict(path: Path, version: str) -> None:
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--no-warn", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_overlays_exist():
    assert {"gke", "multi-worker", "gke-multi-worker", "kueue"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", [OLDEST_K8S, "newest"])
def test_every_rendering_validates_strictly(rendered, version):
    version = newest_validator_version() if version == "newest" else version
    for path in rendered.values():
        validate_strict(path, version)


def test_checkov_finds_no_failed_checks(rendered):
    directory = next(iter(rendered.values())).parent
    command = [checkov_bin(), f"--directory={directory}", "--framework=kubernetes"]
    result = subprocess.run(
        [*command, "--skip-download", "-ojson"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 0
    assert failed == []
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment"), (
            f"{check['check_id']} skipped without a reason"
        )


def job_of(path: Path) -> dict:
    (job,) = by_kind(docs_of(path.read_text()), "Job")
    return job


def test_job_implements_the_trainer_contract(rendered):
    job = job_of(rendered["gke"])
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail[0]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [2, 3, 4],
    }
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert ignore[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    # 143 (SIGTERM, checkpointed) and 5 (storage) are retried: no rule may stop them.
    for rule in rules:
        codes = (rule.get("onExitCodes") or {}).get("values", [])
        assert 143 not in codes and 5 not in codes
    assert pod["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert pod["terminationGracePeriodSeconds"] >= 120
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"]


def test_job_runs_restricted_with_writable_volumes(rendered):
    docs = docs_of(rendered["gke"].read_text())
    pod = by_kind(docs, "Job")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e for e in container["env"]}
    assert set(mounts) >= {"/tmp", "/dev/shm", env["TRAINER_CACHE_DIR"]["value"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    assert all(v["emptyDir"].get("sizeLimit") for v in volumes.values())
    assert env["KERAS_HOME"]["value"].startswith("/tmp")
    assert env["TRAINER_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']"
    )
    (account,) = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", ["multi-worker", "gke-multi-worker"])
def test_multi_worker_is_an_indexed_job_behind_a_headless_service(rendered, overlay):
    docs = docs_of(rendered[overlay].read_text())
    (job,) = by_kind(docs, "Job")
    (service,) = by_kind(docs, "Service")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["TRAINER_NUM_WORKERS"]) >= 2
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"] == env["TRAINER_WORKER_SERVICE"]
    assert service["metadata"]["namespace"] == job["metadata"]["namespace"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["port"] == int(env["TRAINER_WORKER_PORT"])


def test_kueue_overlay_queues_a_suspended_job(rendered):
    job = job_of(rendered["kueue"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    assert job["spec"]["suspend"] is True


def test_params_env_is_the_one_place_for_values(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "params.env").write_text(
        "DATA=gs://my-bucket/data\nOUTPUT=gs://my-bucket/out\nGPUS=4\nWORKERS=3\nQUEUE=q1\n"
    )
    job = by_kind(docs_of(kustomize(copy / "overlays" / "gke-multi-worker")), "Job")[0]
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (env["TRAINER_DATA"], env["TRAINER_OUTPUT"]) == (
        "gs://my-bucket/data",
        "gs://my-bucket/out",
    )
    assert env["TRAINER_EXPECT_GPUS"] == limits["nvidia.com/gpu"] == "4"
    assert job["spec"]["completions"] == 3 and env["TRAINER_NUM_WORKERS"] == "3"


def test_rbac_grants_only_the_launchers_verbs(rendered):
    docs = docs_of(rendered["rbac"].read_text())
    (role,) = by_kind(docs, "Role")
    (binding,) = by_kind(docs, "RoleBinding")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    expected = {("batch", "jobs", v) for v in ("create", "get", "list", "watch")}
    expected |= {("", "services", "create"), ("", "pods/log", "get")}
    expected |= {("", r, v) for r in ("pods", "events") for v in ("get", "list", "watch")}
    assert granted == expected
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert by_kind(docs, "ServiceAccount")


# -- the launcher renders what kubectl renders ----------------------------------------------


def strip_submission_metadata(docs: list[dict]) -> list[dict]:
    """The launcher's run labels/annotations removed: they have no kubectl-path equivalent."""
    docs = json.loads(json.dumps(docs))
    for doc in docs:
        for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata")):
            if not meta:
                continue
            for key in ("labels", "annotations"):
                values = meta.get(key) or {}
                for k in [
                    k
                    for k in values
                    if k.startswith(LABEL_PREFIX) and k != (LABEL_PREFIX + "distribution")
                ]:
                    del values[k]
    return docs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_launcher_rendering_equals_kubectl_kustomize(tmp_path, overlay):
    image = "europe-docker.pkg.dev/proj/st/trainer"
    tag = "3f2a1bc"
    workers = 3 if "multi-worker" in overlay else 1
    params = dict(
        DATA="gs://data-bkt/flowers/v2",
        OUTPUT="gs://model-bkt/runs/7",
        GPUS="1",
        WORKERS=str(workers),
        QUEUE="training",
    )
    # The kubectl path: edit params.env and the image, set the namespace, as documented.
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "params.env").write_text("".join(f"{k}={v}\n" for k, v in params.items()))
    base = yaml.safe_load((copy / "base" / "kustomization.yaml").read_text())
    base["images"] = [{"name": "streamtrain", "newName": image, "newTag": tag}]
    (copy / "base" / "kustomization.yaml").write_text(yaml.safe_dump(base))
    overlay_file = copy / "overlays" / overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(overlay_file.read_text())
    kustomization["namespace"] = "team-ml"
    overlay_file.write_text(yaml.safe_dump(kustomization))
    expected = docs_of(kustomize(copy / "overlays" / overlay))

    out = io.StringIO()
    code = launch(
        [
            f"--overlay={overlay}",
            f"--image={image}:{tag}",
            f"--data={params['DATA']}",
            f"--output={params['OUTPUT']}",
            "--gpus=1",
            f"--workers={workers}",
            "--namespace=team-ml",
            "--name=streamtrain",
            "--git-sha=3f2a1bc",
            "--submitter=ci",
            "--dry-run",
            f"--kubectl={KUBECTL}",
        ],
        environ={},
        out=out,
    )
    assert code == 0
    actual = docs_of(out.getvalue())
    # The launcher did add its run labels: the comparison below is not vacuous.
    job = by_kind(actual, "Job")[0]
    assert job["metadata"]["labels"][LABEL_PREFIX + "git-sha"] == "3f2a1bc"
    assert job["metadata"]["annotations"][LABEL_PREFIX + "data"] == params["DATA"]
    assert strip_submission_metadata(actual) == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_launcher_dry_run_validates_strictly(tmp_path, overlay):
    out = io.StringIO()
    workers = ["--workers=2"] if "multi-worker" in overlay else []
    code = launch(
        [
            "--overlay",
            overlay,
            "--image=ghcr.io/org/streamtrain:1.0",
            "--data=gs://bkt-a/d",
            "--output=gs://bkt-a/m",
            "--queue=team-a",
            "--dry-run",
            *workers,
        ],
        environ={},
        out=out,
    )
    assert code == 0
    path = tmp_path / "dry-run.yaml"
    path.write_text(out.getvalue())
    job = by_kind(docs_of(out.getvalue()), "Job")[0]
    assert job["metadata"]["name"].startswith("streamtrain-")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    for version in (OLDEST_K8S, newest_validator_version()):
        validate_strict(path, version)
