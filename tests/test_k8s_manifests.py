"""k8s/: every overlay and GKE component renders with kubectl kustomize, validates strictly
against Kubernetes 1.31 and the newest schema kubernetes-validate knows (a JobSet or a
PodMonitoring against its CRD's schema in tests/schemas/, a JobSet's Jobs as Jobs), passes
checkov, and implements the
trainer's contract (exit codes, security context, volumes; for the JobSet, the failure policy
replayed against the Job controller's and JobSet controller's matching rules). The launcher's
rendering equals `kubectl kustomize` of the same parameters set the documented way.

    .venv/bin/pytest tests/test_k8s_manifests.py
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from toolbox import (
    BIN,
    CRD_SCHEMAS,
    JOBSET_SCHEMA,
    K8S,
    KUBECTL,
    OLDEST_K8S,
    OVERLAYS,
    PODMONITORING_SCHEMA,
    by_kind,
    checkov_bin,
    docs_of,
    jobs_of,
    kustomize,
    kustomize_with,
)

from streamtrain_launcher.cli import launch
from streamtrain_launcher.options import LABEL_PREFIX


def newest_validator_version() -> str:
    import kubernetes_validate.utils as kv_utils

    return kv_utils.latest_version()


def validate_strict(path: Path, version: str) -> None:
    """kubernetes-validate --strict; every resource but a custom one (JobSet, PodMonitoring:
    no schema there, see validate_custom) must have been validated, not skipped."""
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    docs = docs_of(path.read_text())
    passed = re.findall(r"passed for resource (\S+)/(\S+) against", result.stdout)
    expected = [
        (d["kind"].lower(), d["metadata"]["name"]) for d in docs if d["kind"] not in CRD_SCHEMAS
    ]
    assert sorted(passed) == sorted(expected), result.stdout + result.stderr
    skipped = re.findall(r"Couldn't find schema for kind (\S+)", result.stdout + result.stderr)
    assert set(skipped) <= set(CRD_SCHEMAS), skipped


def validate_jobsets(path: Path, tmp_path: Path, versions: list[str]) -> int:
    """Each JobSet in `path` against the JobSet CRD's schema (check-jsonschema), and its Jobs
    strictly as Jobs; returns how many JobSets there were."""
    jobsets = by_kind(docs_of(path.read_text()), "JobSet")
    for i, jobset in enumerate(jobsets):
        doc = tmp_path / f"{path.stem}-jobset-{i}.json"
        doc.write_text(json.dumps(jobset))
        check_jsonschema(doc)
        jobs = tmp_path / f"{path.stem}-jobset-{i}-jobs.yaml"
        jobs.write_text(yaml.safe_dump_all(jobs_of([jobset])))
        for version in versions:
            validate_strict(jobs, version)
    return len(jobsets)


def validate_custom(path: Path, tmp_path: Path, kind: str) -> int:
    """Each `kind` object in `path` against its CRD's schema; returns how many there were."""
    found = by_kind(docs_of(path.read_text()), kind)
    for i, doc in enumerate(found):
        target = tmp_path / f"{path.stem}-{kind}-{i}.json"
        target.write_text(json.dumps(doc))
        check_jsonschema(target, schema=CRD_SCHEMAS[kind])
    return len(found)


def check_jsonschema(doc: Path, *, expect_ok: bool = True, schema: Path = JOBSET_SCHEMA) -> str:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(schema), str(doc)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode == 0) == expect_ok, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_overlays_exist():
    assert {"gke", "multi-worker", "gke-multi-worker", "kueue", "jobset"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", [OLDEST_K8S, "newest"])
def test_every_rendering_validates_strictly(rendered, version):
    version = newest_validator_version() if version == "newest" else version
    for path in rendered.values():
        validate_strict(path, version)


def test_every_jobset_validates_against_the_crd_schema(rendered, tmp_path):
    versions = [OLDEST_K8S, newest_validator_version()]
    counted = {name: validate_jobsets(path, tmp_path, versions) for name, path in rendered.items()}
    assert counted["jobset"] == 1
    assert counted["components/jobset-gke-all"] == 1
    assert counted["gke"] == 0


def test_the_jobset_schema_rejects_what_the_api_server_would(rendered, tmp_path):
    """The stored schema is strict, typed and enumerated as the CRD is (a check that can fail)."""
    (jobset,) = by_kind(docs_of(rendered["jobset"].read_text()), "JobSet")
    schema = json.loads(JOBSET_SCHEMA.read_text())
    assert schema["title"] == "JobSet jobset.x-k8s.io/v1alpha2"

    def broken(change) -> str:
        doc = json.loads(json.dumps(jobset))
        change(doc)
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(doc))
        return check_jsonschema(path, expect_ok=False)

    rules = lambda d: d["spec"]["failurePolicy"]["rules"]  # noqa: E731
    worker = lambda d: d["spec"]["replicatedJobs"][0]["template"]["spec"]  # noqa: E731
    broken(lambda d: d["spec"].update(failurePolicy={"maxRestart": 3}))  # a typo
    broken(lambda d: rules(d)[0].update(action="FailJob"))  # a Job's action, not JobSet's
    broken(lambda d: rules(d)[0].pop("name"))  # required by the CRD
    broken(lambda d: d["spec"]["successPolicy"].update(operator="Some"))
    broken(lambda d: worker(d).update(completions="2"))  # JobSpec typed as in k8s.io/api
    broken(lambda d: worker(d)["template"]["spec"].update(restartPolicy=None))
    broken(lambda d: d.update(apiVersion="jobset.x-k8s.io/v1alpha1"))


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
    # The JobSets' pods were scanned, as the Jobs JobSet makes (checkov skips custom kinds).
    scanned = {c["file_path"] for c in report["results"]["passed_checks"]}
    assert any(p.endswith("jobset.jobset-jobs.yaml") for p in scanned), sorted(scanned)
    assert any(p.endswith("component-gcsfuse.yaml") for p in scanned), sorted(scanned)
    for check in report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment"), (
            f"{check['check_id']} skipped without a reason"
        )


def job_of(path: Path) -> dict:
    """The rendering's one Job (for a JobSet: its workers' Job)."""
    (job,) = jobs_of(docs_of(path.read_text()))
    return job


def env_of(job: dict) -> dict:
    (container,) = [
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "trainer"
    ]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


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


def test_every_job_waits_for_its_failed_pod_before_replacing_it(rendered):
    """podReplacementPolicy Failed: a replacement never overlaps its predecessor (TF rejects a
    second task with the same name: duplicate task registration)."""
    jobs = {
        name: jobs_of(docs_of(path.read_text()))
        for name, path in rendered.items()
        if name != "rbac"
    }
    assert all(jobs.values())
    for name, found in jobs.items():
        for job in found:
            assert job["spec"]["podReplacementPolicy"] == "Failed", name


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
    # Worker 0 (the chief, which writes _SUCCESS) exiting 0 completes the Job.
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0", "succeededCount": 1}]}


def test_kueue_overlay_queues_a_suspended_job(rendered):
    job = job_of(rendered["kueue"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    assert job["spec"]["suspend"] is True


def test_kueue_queues_a_jobset_as_one_workload(rendered):
    """The queue label and suspend go on the JobSet; its Jobs carry neither (Kueue would
    otherwise manage them as workloads of their own)."""
    (jobset,) = by_kind(docs_of(rendered["components/jobset-gke-all"].read_text()), "JobSet")
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    assert jobset["spec"]["suspend"] is True
    template = jobset["spec"]["replicatedJobs"][0]["template"]
    assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]
    assert "suspend" not in template["spec"]
    (plain,) = by_kind(docs_of(rendered["jobset"].read_text()), "JobSet")
    assert "suspend" not in plain["spec"]
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


# -- the JobSet ---------------------------------------------------------------------------------


def jobset_of(path: Path) -> dict:
    docs = docs_of(path.read_text())
    assert by_kind(docs, "Job") == []  # the build-time Job stays out of the output
    (jobset,) = by_kind(docs, "JobSet")
    return jobset


def test_jobset_runs_one_indexed_job_of_n_workers(rendered):
    jobset = jobset_of(rendered["jobset"])
    spec = jobset["spec"]
    (workers,) = spec["replicatedJobs"]
    job = workers["template"]["spec"]
    env = env_of(job_of(rendered["jobset"]))
    assert workers["name"] == "workers" and workers["replicas"] == 1
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(env["TRAINER_NUM_WORKERS"]) >= 2
    assert job["successPolicy"] == {"rules": [{"succeededIndexes": "0", "succeededCount": 1}]}
    assert spec["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["workers"]}
    # JobSet makes the headless Service (named after the JobSet) and the pods' hostnames.
    assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    assert "subdomain" not in spec["network"]
    assert by_kind(docs_of(rendered["jobset"].read_text()), "Service") == []
    # A finished JobSet cleans up after itself; its Jobs have no TTL that would make JobSet
    # recreate them.
    assert spec["ttlSecondsAfterFinished"] > 0 and "ttlSecondsAfterFinished" not in job
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and "subdomain" not in pod
    assert env["TRAINER_WORKER_SERVICE"] == {
        "fieldRef": {"fieldPath": "metadata.labels['jobset.sigs.k8s.io/jobset-name']"}
    }
    assert env["TRAINER_JOB_NAME"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }


def test_jobset_workers_find_each_other_at_jobset_hostnames(rendered):
    """The trainer's own TF_CONFIG derivation, fed what the downward API gives each pod, names
    JobSet's hostnames <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>."""
    from trainer.distribute.cluster import cluster_from_env

    jobset = jobset_of(rendered["jobset"])
    (workers,) = jobset["spec"]["replicatedJobs"]
    env = env_of(job_of(rendered["jobset"]))
    name = "run-abc1234-x7k2p"
    n = int(env["TRAINER_NUM_WORKERS"])
    # Set on the pods by the JobSet controller (labels) and the Job controller (index, name).
    pod_labels = {
        "jobset.sigs.k8s.io/jobset-name": name,
        "batch.kubernetes.io/job-name": f"{name}-{workers['name']}-0",
    }

    def field(ref: dict) -> str:
        (key,) = re.fullmatch(r"metadata\.labels\['(.+)'\]", ref["fieldRef"]["fieldPath"]).groups()
        return pod_labels[key]

    subdomain = jobset["spec"]["network"].get("subdomain") or name
    hostnames = [f"{name}-{workers['name']}-0-{i}.{subdomain}" for i in range(n)]
    for index in range(n):
        cluster = cluster_from_env(
            {"JOB_COMPLETION_INDEX": str(index)},
            num_workers=int(env["TRAINER_NUM_WORKERS"]),
            worker_service=field(env["TRAINER_WORKER_SERVICE"]),
            worker_port=int(env["TRAINER_WORKER_PORT"]),
            job_name=field(env["TRAINER_JOB_NAME"]),
        )
        tf_config = json.loads(cluster.tf_config)
        assert tf_config["cluster"]["worker"] == [
            f"{h}:{env['TRAINER_WORKER_PORT']}" for h in hostnames
        ]
        assert tf_config["task"] == {"type": "worker", "index": index}


# What the Job controller and the JobSet controller do with a failed pod, as their Go source
# does it (kubernetes pkg/controller/job/pod_failure_policy.go matchPodFailurePolicy; jobset
# pkg/controllers/failure_policy.go findFirstFailedPolicyRuleAndJob and ruleIsApplicable).


def job_failure(job: dict, *, exit_code: int | None, condition: str | None = None) -> tuple:
    """(reason, message) of the Job's Failed condition after one failed pod (backoffLimit 0)."""
    pod = "ns/pod-x"
    for index, rule in enumerate(job["podFailurePolicy"]["rules"]):
        on_codes = rule.get("onExitCodes")
        if on_codes and exit_code and exit_code in on_codes["values"]:
            assert on_codes["operator"] == "In" and rule["action"] == "FailJob"
            message = (
                f"Container {on_codes['containerName']} for pod {pod} failed with exit code "
                f"{exit_code} matching FailJob rule at index {index}"
            )
            return "PodFailurePolicy", message
        patterns = rule.get("onPodConditions") or []
        if condition and any(p["type"] == condition and p["status"] == "True" for p in patterns):
            assert rule["action"] == "FailJob"
            message = f"Pod {pod} has condition {condition} matching FailJob rule at index {index}"
            return "PodFailurePolicy", message
    assert job["backoffLimit"] == 0
    return "BackoffLimitExceeded", "Job has reached the specified backoff limit"


def jobset_action(jobset: dict, reason: str, message: str) -> str:
    for rule in jobset["spec"]["failurePolicy"]["rules"]:
        if rule.get("onJobFailureReasons") and reason not in rule["onJobFailureReasons"]:
            continue
        patterns = rule.get("onJobFailureMessagePatterns") or []
        # Go's regexp.MatchString: an unanchored search, RE2 syntax (these patterns mean the
        # same in Python's re).
        if patterns and not any(re.search(p, message) for p in patterns):
            continue
        if rule.get("targetReplicatedJobs") and "workers" not in rule["targetReplicatedJobs"]:
            continue
        return rule["action"]
    return "RestartJobSet"  # JobSet's default when no rule matches


@pytest.mark.parametrize(
    ("exit_code", "condition", "action"),
    [
        (2, None, "FailJobSet"),  # bad input
        (3, None, "FailJobSet"),  # quality gate
        (4, None, "FailJobSet"),  # GPUs missing
        (6, None, "RestartJobSetAndIgnoreMaxRestarts"),  # a peer was lost
        (143, None, "RestartJobSetAndIgnoreMaxRestarts"),  # SIGTERM, checkpointed
        (137, "DisruptionTarget", "RestartJobSetAndIgnoreMaxRestarts"),  # preempted
        (1, None, "RestartJobSet"),  # a crash: counts against maxRestarts
        (5, None, "RestartJobSet"),  # object store down past its deadline
        (23, None, "RestartJobSet"),  # not 2 or 3: the pattern is not a prefix match
    ],
)
def test_jobset_failure_policy_follows_the_trainer_exit_codes(
    rendered, exit_code, condition, action
):
    jobset = jobset_of(rendered["jobset"])
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    reason, message = job_failure(job, exit_code=exit_code, condition=condition)
    assert jobset_action(jobset, reason, message) == action, (reason, message)


def test_jobset_failure_policy_is_what_jobset_accepts(rendered):
    jobset = jobset_of(rendered["jobset"])
    policy = jobset["spec"]["failurePolicy"]
    assert policy["maxRestarts"] >= 1
    valid_reasons = {
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "FailedIndexes",
        "MaxFailedIndexesExceeded",
        "PodFailurePolicy",
    }  # jobset pkg/webhooks/jobset_webhook.go validOnJobFailureReasons
    names = [rule["name"] for rule in policy["rules"]]
    assert len(set(names)) == len(names)
    for rule in policy["rules"]:
        assert re.fullmatch(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", rule["name"])
        assert set(rule.get("onJobFailureReasons", [])) <= valid_reasons
        for pattern in rule.get("onJobFailureMessagePatterns", []):
            re.compile(pattern)
    # A Job that ran out of time fails the run instead of starting another day.
    assert jobset_action(jobset, "DeadlineExceeded", "Job was active longer than specified") == (
        "FailJobSet"
    )


def test_params_env_is_the_one_place_for_values(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "params.env").write_text(
        "DATA=gs://my-bucket/data\nOUTPUT=gs://my-bucket/out\nGPUS=4\nWORKERS=3\nQUEUE=q1\n"
        "FUSE_BUCKET=my-bucket\n"
    )
    for overlay in ("gke-multi-worker", "jobset"):
        (job,) = jobs_of(docs_of(kustomize(copy / "overlays" / overlay)))
        env = env_of(job)
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert (env["TRAINER_DATA"], env["TRAINER_OUTPUT"]) == (
            "gs://my-bucket/data",
            "gs://my-bucket/out",
        )
        assert env["TRAINER_EXPECT_GPUS"] == limits["nvidia.com/gpu"] == "4"
        assert job["spec"]["completions"] == 3 and env["TRAINER_NUM_WORKERS"] == "3"


# -- the GKE components ---------------------------------------------------------------------------


def test_gcsfuse_mounts_the_bucket_read_only_with_caches(rendered):
    job = job_of(rendered["components/gcsfuse"])
    template = job["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    annotations = template["metadata"]["annotations"]
    assert annotations["gke-gcsfuse/volumes"] == "true"
    (volume,) = [v for v in pod["volumes"] if "csi" in v]
    csi = volume["csi"]
    assert csi["driver"] == "gcsfuse.csi.storage.gke.io" and csi["readOnly"] is True
    assert csi["volumeAttributes"]["bucketName"] == "example-bucket"  # FUSE_BUCKET
    options = dict(
        o.rsplit(":", 1) if ":" in o else (o.partition("=")[0], o.partition("=")[2])
        for o in csi["volumeAttributes"]["mountOptions"].split(",")
    )
    assert "implicit-dirs" in options  # class folders are only object-name prefixes
    assert options["uid"] == str(pod["securityContext"]["runAsUser"])
    cache_mb = int(options["file-cache:max-size-mb"])
    assert cache_mb > 0
    assert options["metadata-cache:ttl-secs"] == "-1"
    assert options["metadata-cache:stat-cache-max-size-mb"] == "-1"
    assert options["metadata-cache:type-cache-max-size-mb"] == "-1"
    # The file cache is in the sidecar's emptyDir: its ephemeral-storage limit must exceed it.
    limit = annotations["gke-gcsfuse/ephemeral-storage-limit"]
    assert limit.endswith("Gi") and int(limit[:-2]) * 1024 > cache_mb
    for resource in ("cpu", "memory", "ephemeral-storage"):
        assert annotations[f"gke-gcsfuse/{resource}-limit"]
        assert annotations[f"gke-gcsfuse/{resource}-request"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    env = env_of(job)
    assert env["TRAINER_DATA"].startswith(mount["mountPath"] + "/")
    assert env["TRAINER_CACHE_SIZE_MB"] == "0"  # gcsfuse's file cache holds the one copy


def test_spot_selects_spot_nodes_and_keeps_the_gpu_toleration(rendered):
    pod = job_of(rendered["components/spot"])["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"]
    tolerations = pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in tolerations


def test_flex_start_asks_kueue_for_a_provisioning_request(rendered):
    key = "provreq.kueue.x-k8s.io/maxRunDurationSeconds"
    job = job_of(rendered["components/flex-start"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    assert int(job["metadata"]["annotations"][key]) == job["spec"]["activeDeadlineSeconds"]
    assert int(job["metadata"]["annotations"][key]) <= 7 * 86400  # flex-start's maximum
    # For a JobSet, Kueue reads the annotation from the JobSet, its workload's owner.
    (jobset,) = by_kind(docs_of(rendered["components/jobset-gke-all"].read_text()), "JobSet")
    assert jobset["metadata"]["annotations"][key] == job["metadata"]["annotations"][key]


def test_components_reach_the_jobset_through_the_params_copy(rendered):
    """Components patch the Job; the JobSet gets them all, in its workers' template."""
    pod = job_of(rendered["components/jobset-gke-all"])["spec"]["template"]
    assert pod["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    assert pod["spec"]["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert any(v.get("csi") for v in pod["spec"]["volumes"])
    assert env_of(job_of(rendered["components/jobset-gke-all"]))["TRAINER_DATA"].startswith(
        "/data/"
    )


# -- components/metrics: GKE Managed Prometheus ------------------------------------------------

# Prometheus's duration syntax (model.ParseDuration), which GMP requires of an interval.
PROMETHEUS_DURATION = re.compile(
    r"((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?"
)


def ports_of(job: dict) -> dict[str, int]:
    (container,) = [
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "trainer"
    ]
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # all these manifests use
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_podmonitoring_validates_against_the_crd_schema(rendered, tmp_path):
    counted = {
        name: validate_custom(path, tmp_path, "PodMonitoring") for name, path in rendered.items()
    }
    assert counted["components/metrics"] == counted["components/metrics-jobset"] == 1
    assert counted["gke"] == counted["jobset"] == 0


def test_the_podmonitoring_schema_rejects_what_the_api_server_would(rendered, tmp_path):
    (monitoring,) = by_kind(docs_of(rendered["components/metrics"].read_text()), "PodMonitoring")
    assert json.loads(PODMONITORING_SCHEMA.read_text())["title"] == (
        "PodMonitoring monitoring.googleapis.com/v1"
    )

    def broken(change) -> str:
        doc = json.loads(json.dumps(monitoring))
        change(doc)
        path = tmp_path / "broken-podmonitoring.json"
        path.write_text(json.dumps(doc))
        return check_jsonschema(path, expect_ok=False, schema=PODMONITORING_SCHEMA)

    endpoint = lambda d: d["spec"]["endpoints"][0]  # noqa: E731
    broken(lambda d: endpoint(d).pop("port"))  # required: what to scrape
    broken(lambda d: endpoint(d).update(port=""))  # minLength 1
    broken(lambda d: endpoint(d).pop("interval"))  # required
    broken(lambda d: endpoint(d).update(intervall="30s"))  # a typo: strict fields
    broken(lambda d: endpoint(d).update(scheme="tcp"))  # http or https
    broken(lambda d: d["spec"].update(endpoints=[]))  # minItems 1
    broken(lambda d: d["spec"].pop("selector"))
    broken(lambda d: d.update(apiVersion="monitoring.googleapis.com/v1alpha1"))


@pytest.mark.parametrize("name", ["components/metrics", "components/metrics-jobset"])
def test_metrics_component_scrapes_the_port_the_trainer_serves(rendered, name, tmp_path):
    """The PodMonitoring selects the trainer's pods and names the port the trainer listens on
    (TRAINER_METRICS_PORT, read by the trainer's own config); GMP's collectors may reach it."""
    from trainer.config import build_config

    docs = docs_of(rendered[name].read_text())
    job = job_of(rendered[name])
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    (monitoring,) = by_kind(docs, "PodMonitoring")
    (endpoint,) = monitoring["spec"]["endpoints"]
    port = ports_of(job)[endpoint["port"]]
    env = env_of(job)
    assert int(env["TRAINER_METRICS_PORT"]) == port
    assert matches(monitoring["spec"]["selector"], pod_labels)
    assert monitoring["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert endpoint.get("path", "/metrics") == "/metrics"  # where prometheus-client serves
    assert PROMETHEUS_DURATION.fullmatch(endpoint["interval"]) and endpoint["interval"]
    (tmp_path / "data").mkdir()
    cfg = build_config(
        ["--data", str(tmp_path / "data"), "--output", str(tmp_path / "out")],
        env={"TRAINER_METRICS_PORT": env["TRAINER_METRICS_PORT"]},
    )
    assert cfg.metrics_port == port
    # Every policy selecting the pods is additive: one must admit gmp-system on that port.
    policies = [
        p for p in by_kind(docs, "NetworkPolicy") if matches(p["spec"]["podSelector"], pod_labels)
    ]
    assert len(policies) == 2  # k8s/namespace's, and the component's

    def admits_collectors(rule: dict) -> bool:
        ports = [p["port"] for p in rule.get("ports", [])]
        return (endpoint["port"] in ports or port in ports) and any(
            peer.get("namespaceSelector")
            == {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}
            for peer in rule["from"]
        )

    admitting = [r for p in policies for r in p["spec"]["ingress"] if admits_collectors(r)]
    assert len(admitting) == 1
    # Only the metrics port (the worker port stays closed to other namespaces), and only the
    # collectors' pods, as upstream's DaemonSet labels them (its immutable selector).
    assert admitting[0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (peer,) = admitting[0]["from"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "collector"}}


@pytest.mark.parametrize(
    "components",
    [["multi-worker", "metrics"], ["metrics", "multi-worker"], ["metrics", "jobset"]],
)
def test_metrics_port_is_added_beside_the_worker_port(tmp_path, components):
    """In either order, the trainer keeps the worker port 2222 and gains the metrics port."""
    (job,) = jobs_of(docs_of(kustomize_with(components, {}, tmp_path / "k")))
    assert ports_of(job) == {"worker": 2222, "metrics": 9400}
    env = env_of(job)
    assert (env["TRAINER_WORKER_PORT"], env["TRAINER_METRICS_PORT"]) == ("2222", "9400")


def test_the_metrics_docs_name_what_is_served_and_applied():
    """docs/operations.md's Metrics section lists every metric the trainer exports (with its
    type), and its kubectl command applies every object components/metrics adds."""
    from trainer.data.counters import Counters
    from trainer.train.telemetry import Telemetry

    section = (K8S.parent / "docs" / "operations.md").read_text().split("\n## Metrics\n")[1]
    section = section.split("\n## ")[0]
    documented = dict(re.findall(r"^\| `(streamtrain_\w+)` \| (\w+) \|", section, re.M))
    telemetry = Telemetry(Counters(), worker=0, total_steps=1, start_step=0)
    served = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in telemetry.registry.collect()
    }
    assert documented == served
    component = yaml.safe_load((K8S / "components" / "metrics" / "kustomization.yaml").read_text())
    applied = re.findall(r"-f k8s/components/metrics/(\S+\.yaml)", section)
    assert sorted(applied) == sorted(component["resources"])


def test_every_component_is_rendered_by_the_tests(rendered, tmp_path):
    components = {p.name for p in (K8S / "components").iterdir()}
    used = {"params", "gke", "multi-worker", "kueue", "jobset"}
    assert components - used <= {n.split("/")[1] for n in rendered if n.startswith("components/")}
    # Also through an ad-hoc kustomization, as an overlay of one's own would use them.
    assert jobs_of(docs_of(kustomize_with(["spot"], {}, tmp_path / "spot")))


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
    expected |= {("jobset.x-k8s.io", "jobsets", v) for v in ("create", "get", "list", "watch")}
    expected |= {("kueue.x-k8s.io", "workloads", "list")}
    expected |= {("", "services", "create"), ("", "pods/log", "get")}
    expected |= {("", r, v) for r in ("pods", "events") for v in ("get", "list", "watch")}
    assert granted == expected
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert by_kind(docs, "ServiceAccount")


# -- the launcher renders what kubectl renders ----------------------------------------------


def strip_submission_metadata(docs: list[dict]) -> list[dict]:
    """The launcher's run labels/annotations removed, wherever they are (a JobSet has three
    levels of metadata): they have no kubectl-path equivalent."""
    docs = json.loads(json.dumps(docs))

    def strip(node):
        if isinstance(node, list):
            for item in node:
                strip(item)
        elif isinstance(node, dict):
            for key in ("labels", "annotations"):
                values = node.get("metadata", {}).get(key) if "metadata" in node else None
                for k in [
                    k
                    for k in values or {}
                    if k.startswith(LABEL_PREFIX) and k != (LABEL_PREFIX + "distribution")
                ]:
                    del values[k]
            for value in node.values():
                strip(value)

    strip(docs)
    return docs


@pytest.mark.parametrize(
    ("overlay", "metrics"), [(o, False) for o in OVERLAYS] + [("gke", True), ("jobset", True)]
)
def test_launcher_rendering_equals_kubectl_kustomize(tmp_path, overlay, metrics):
    image = "europe-docker.pkg.dev/proj/st/trainer"
    tag = "3f2a1bc"
    workers = 3 if "multi-worker" in overlay or overlay == "jobset" else 1
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
    if metrics:  # --metrics: components/metrics, before params as every component
        kustomization["components"].insert(-1, "../../components/metrics")
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
            *(["--metrics"] if metrics else []),
        ],
        environ={},
        out=out,
    )
    assert code == 0
    actual = docs_of(out.getvalue())
    assert bool(by_kind(actual, "PodMonitoring")) == metrics
    # The launcher did add its run labels: the comparison below is not vacuous.
    (workload,) = by_kind(actual, "Job") + by_kind(actual, "JobSet")
    assert workload["metadata"]["labels"][LABEL_PREFIX + "git-sha"] == "3f2a1bc"
    assert workload["metadata"]["annotations"][LABEL_PREFIX + "data"] == params["DATA"]
    (job,) = jobs_of(actual)
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_PREFIX + "git-sha"] == "3f2a1bc"
    assert strip_submission_metadata(actual) == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_launcher_dry_run_validates_strictly(tmp_path, overlay):
    out = io.StringIO()
    workers = ["--workers=2"] if "multi-worker" in overlay or overlay == "jobset" else []
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
    docs = docs_of(out.getvalue())
    (workload,) = by_kind(docs, "Job") + by_kind(docs, "JobSet")
    assert workload["metadata"]["name"].startswith("streamtrain-")
    assert workload["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert workload["spec"]["suspend"] is True
    versions = [OLDEST_K8S, newest_validator_version()]
    for version in versions:
        validate_strict(path, version)
    assert validate_jobsets(path, tmp_path, versions) == (overlay == "jobset")


@pytest.mark.parametrize("overlay", ["gke", "multi-worker", "jobset"])
def test_every_overlay_logs_json_lines_the_trainer_accepts(rendered, overlay, tmp_path):
    from trainer.config import build_config

    docs = docs_of(rendered[overlay].read_text())
    jobs = by_kind(docs, "Job") or [
        rj["template"] for js in by_kind(docs, "JobSet") for rj in js["spec"]["replicatedJobs"]
    ]
    (container,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRAINER_LOG_FORMAT"] == "json"
    (tmp_path / "data").mkdir()
    cfg = build_config(
        ["--data", str(tmp_path / "data"), "--output", str(tmp_path / "out")],
        env={"TRAINER_LOG_FORMAT": "json"},
    )
    assert cfg.log_format == "json"
