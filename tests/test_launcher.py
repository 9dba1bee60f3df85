"""scripts/launch.py against a Kubernetes API test server (tests/kube_api_server.py): the real
`kubernetes` client, real JSON over HTTP, a kubeconfig file. One test per scenario: success,
failure with the trainer's exit code and termination message, Pending until --timeout, 409,
401, 403, 422, unreachable, watch expiry (410), the Job deleted, bad input before any call;
a JobSet's success, verdict, restart and deadline, a cluster without JobSet; a Job or JobSet
that Kueue keeps suspended, explained from its Workload (v1beta2 or v1beta1, as discovered).

    .venv/bin/pytest tests/test_launcher.py
"""

from __future__ import annotations

import io
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from kube_api_server import (
    KubeApiServer,
    status_body,
    terminated_status,
    unschedulable_status,
    waiting_status,
    workload_condition,
)

from streamtrain_launcher.cli import launch
from streamtrain_launcher.exitcodes import LaunchExit

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def run(kubeconfig: Path, *extra: str, overlay: str = "gke") -> tuple[int, str]:
    out = io.StringIO()
    code = launch(
        [
            f"--kubeconfig={kubeconfig}",
            f"--kubectl={KUBECTL}",
            f"--overlay={overlay}",
            "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
            "--data=gs://data-bkt/flowers",
            "--output=gs://model-bkt/run1",
            "--git-sha=3f2a1bc",
            "--submitter=ci",
            *extra,
        ],
        environ={},
        out=out,
    )
    return code, out.getvalue()


def test_success_streams_logs_of_every_worker_and_exits_0(api, kubeconfig):
    def scenario(job):
        for index in range(2):
            api.start_scenario(
                lambda i=index: api.run_pod(
                    job, index=i, logs=[f"epoch 1 worker {i}", f"epoch 2 worker {i}"], exit_code=0
                )
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            phases = [p["status"]["phase"] for p in api.items("pods")]
            if phases == ["Succeeded", "Succeeded"]:
                break
            time.sleep(0.02)
        api.set_job_condition(job["metadata"]["name"], "Complete", reason="CompletionsReached")

    api.on_job_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s", "--workers=2", overlay="multi-worker")
    assert code == LaunchExit.OK, out
    for index in range(2):
        assert f"[worker {index}] epoch 1 worker {index}" in out
        assert f"[worker {index}] epoch 2 worker {index}" in out
    (job,) = api.items("jobs")
    (service,) = api.items("services")
    name = job["metadata"]["name"]
    assert name.startswith("streamtrain-3f2a1bc-") and len(name) <= 50
    labels = job["metadata"]["labels"]
    assert labels["streamtrain.io/git-sha"] == "3f2a1bc"
    assert labels["streamtrain.io/submitted-by"] == "ci"
    assert job["metadata"]["annotations"]["streamtrain.io/data"] == "gs://data-bkt/flowers"
    assert job["spec"]["completions"] == 2
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    assert f"job/{name} submitted" in out


def test_existing_worker_service_is_reused(api, kubeconfig):
    api.put("services", {"metadata": {"name": "streamtrain-workers"}, "spec": {}})
    code, _ = run(kubeconfig, "--workers=2", overlay="multi-worker")
    assert code == LaunchExit.OK
    assert len(api.items("jobs")) == 1


@pytest.mark.parametrize(
    ("exit_code", "reason", "expected"),
    [
        (3, "PodFailurePolicy", LaunchExit.QUALITY_GATE),
        (2, "PodFailurePolicy", LaunchExit.BAD_INPUT),
        (1, "BackoffLimitExceeded", LaunchExit.JOB_FAILED),
        (5, "BackoffLimitExceeded", LaunchExit.STORAGE_UNAVAILABLE),
        (143, "DeadlineExceeded", LaunchExit.JOB_DEADLINE),
    ],
)
def test_failure_prints_events_and_termination_message(
    api, kubeconfig, exit_code, reason, expected
):
    def scenario(job):
        pod = api.run_pod(job, index=0, logs=["loading data"], exit_code=0)
        api.set_pod_status(
            pod,
            terminated_status(job, exit_code=exit_code, message=f"trainer said {exit_code}"),
        )
        api.add_event(pod, reason="BackOff", message="something to see")
        api.set_job_condition(job["metadata"]["name"], "Failed", reason=reason, message="failed")

    api.on_job_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s")
    assert code == expected
    assert f"exit code {exit_code} (Error)" in out
    assert f"    trainer said {exit_code}" in out
    assert "Warning BackOff: something to see" in out
    assert "[worker 0] loading data" in out


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (
            unschedulable_status("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
            "Insufficient nvidia.com/gpu",
        ),
        (
            waiting_status(None, "ImagePullBackOff", 'Back-off pulling image "x"'),
            "ImagePullBackOff",
        ),
    ],
)
def test_pending_until_timeout_reports_why(api, kubeconfig, caplog, status, reason):
    api.on_job_created = lambda job: api.add_pod(job, index=0, status=status)
    with caplog.at_level(logging.INFO):
        code, _ = run(kubeconfig, "--wait", "--timeout=2s")
    assert code == LaunchExit.TIMEOUT
    final = caplog.records[-1].getMessage()
    assert "--timeout 2s reached" in final
    assert reason in final
    # Reported once while waiting, not only at the end.
    assert any(reason in r.getMessage() and "waiting" in r.getMessage() for r in caplog.records)


def test_logs_of_a_pod_the_pod_watch_reports_late_are_not_missed(api, kubeconfig):
    """The Job's watch says Failed before the pod watch has shown the pod: its log and exit
    code are still printed (the pods are listed again at the end)."""
    api.watch_lag_s["pods"] = 1.0

    def scenario(job):
        api.run_pod(job, index=0, logs=["reading gs://data-bkt/flowers"], exit_code=2)
        api.set_job_condition(job["metadata"]["name"], "Failed", reason="PodFailurePolicy")

    api.on_job_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s")
    assert code == LaunchExit.BAD_INPUT
    assert "[worker 0] reading gs://data-bkt/flowers" in out


def test_name_conflict_exits_15(api, kubeconfig, caplog):
    api.put("jobs", {"metadata": {"name": "nightly"}, "spec": {}})
    code, _ = run(kubeconfig, "--name=nightly")
    assert code == LaunchExit.CONFLICT
    assert 'jobs.batch "nightly" already exists' in caplog.text


def test_unauthorized_exits_13(api, kubeconfig, caplog):
    api.token = "someone-else"
    code, _ = run(kubeconfig)
    assert code == LaunchExit.API_DENIED
    assert "401" in caplog.text


def test_forbidden_exits_13(api, kubeconfig, caplog):
    api.errors[("POST", "jobs")] = status_body(
        403,
        "Forbidden",
        'jobs.batch is forbidden: User "ci" cannot create resource "jobs" in API group "batch"',
    )
    code, _ = run(kubeconfig)
    assert code == LaunchExit.API_DENIED
    assert 'cannot create resource "jobs"' in caplog.text
    assert "k8s/rbac" in caplog.text
    assert api.items("jobs") == []


def test_invalid_exits_16(api, kubeconfig, caplog):
    api.errors[("POST", "jobs")] = status_body(
        422, "Invalid", 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required'
    )
    code, _ = run(kubeconfig)
    assert code == LaunchExit.INVALID
    assert "containers[0].image: Required" in caplog.text


def test_unreachable_server_exits_14(tmp_path, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    with KubeApiServer() as server:
        kubeconfig = server.write_kubeconfig(
            tmp_path / "kubeconfig", server=f"http://127.0.0.1:{port}"
        )
    code, _ = run(kubeconfig)
    assert code == LaunchExit.API_UNREACHABLE
    assert "unreachable" in caplog.text


def test_missing_kubeconfig_exits_14(tmp_path, caplog):
    code, _ = run(tmp_path / "nope")
    assert code == LaunchExit.API_UNREACHABLE
    assert str(tmp_path / "nope") in caplog.text


def test_watch_expiry_relists_and_follows_to_completion(api, kubeconfig, caplog):
    api.expire_watches = {"jobs": 1, "pods": 1}

    def scenario(job):
        api.run_pod(job, index=0, logs=["done"], exit_code=0)
        api.set_job_condition(job["metadata"]["name"], "Complete", reason="CompletionsReached")

    api.on_job_created = scenario
    with caplog.at_level(logging.INFO):
        code, out = run(kubeconfig, "--wait", "--timeout=30s")
    assert code == LaunchExit.OK
    assert "[worker 0] done" in out
    job_lists = [
        path
        for method, path in api.requests
        if method == "GET" and "/jobs?" in path and "watch=true" not in path
    ]
    assert len(job_lists) >= 2, "expected a relist after 410 Gone"
    assert "410 Gone" in caplog.text


def test_job_deleted_while_followed_exits_17(api, kubeconfig):
    def scenario(job):
        api.add_pod(job, index=0, status=unschedulable_status("no nodes"))
        time.sleep(0.3)
        api.delete("jobs", job["metadata"]["name"])

    api.on_job_created = scenario
    code, _ = run(kubeconfig, "--wait", "--timeout=30s")
    assert code == LaunchExit.JOB_DELETED


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--image=trainer", "no tag or digest"),
        ("--image=r.io/t:latest", "not reproducible"),
        ("--data=s3://bkt/x", "gs:// URI"),
        ("--gpus=99", "outside 0..16"),
        ("--namespace=Bad_NS", "DNS-1123"),
        ("--overlay=nope", "not found"),
        ("--workers=3", "use --overlay multi-worker"),
        ("--overlay=jobset", "--workers 1: --overlay jobset renders a JobSet"),
        ("--trainer-env=TRAINER_DATA=x", "set by the launcher"),
        ("--trainer-env=PATH=/x", "only TRAINER_"),
    ],
)
def test_bad_input_exits_2_before_any_api_call(api, kubeconfig, caplog, flag, message):
    code, _ = run(kubeconfig, flag)
    assert code == LaunchExit.BAD_INPUT
    assert message in caplog.text
    assert api.requests == []


def test_environment_variables_set_the_flags(api, kubeconfig):
    out = io.StringIO()
    environ = {
        "LAUNCH_IMAGE": "ghcr.io/org/streamtrain:v1",
        "LAUNCH_DATA": "gs://data-bkt/d",
        "LAUNCH_OUTPUT": "gs://data-bkt/m",
        "LAUNCH_GPUS": "1",
        "LAUNCH_NAMESPACE": "team-a",
        "LAUNCH_KUBECONFIG": str(kubeconfig),
        "LAUNCH_NAME": "from-env",
        "LAUNCH_KUBECTL": KUBECTL,
    }
    assert launch([], environ=environ, out=out) == LaunchExit.OK
    job = api.get("jobs", "from-env", "team-a")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/org/streamtrain:v1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_launcher_imports_no_tensorflow_or_numpy():
    code = (
        "import sys; import streamtrain_launcher.cli, streamtrain_launcher.follow,"
        " streamtrain_launcher.kube;"
        "bad = {'tensorflow', 'numpy', 'keras'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    result = subprocess.run(
        [sys.executable, "scripts/launch.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "15  an object with the Job's name already exists (409)" in result.stdout


def test_the_trainers_variables_are_written_out_alike():
    from streamtrain_launcher.options import TRAINER_VARIABLES
    from trainer.config.load import CONFIG_ENV
    from trainer.config.table import FIELDS

    assert {f.env for f in FIELDS} | {CONFIG_ENV} == TRAINER_VARIABLES


def test_an_unknown_trainer_variable_is_warned_about_and_passed_on(kubeconfig, caplog):
    with caplog.at_level(logging.WARNING):
        code, out = run(
            kubeconfig,
            "--trainer-env",
            "TRAINER_EPOCS=3",
            "--trainer-env",
            "TRAINER_EPOCHS=2",
            "--dry-run",
        )
    assert code == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "--trainer-env TRAINER_EPOCS: the trainer reads no such variable, ignored; "
        "did you mean TRAINER_EPOCHS?"
    ]
    assert "TRAINER_EPOCS" in out  # passed on all the same: the image may be newer


def test_shared_exit_codes_equal_the_trainers():
    from trainer.errors import ExitCode

    for code in ("OK", "BAD_INPUT", "QUALITY_GATE", "NO_GPU", "STORAGE_UNAVAILABLE"):
        assert LaunchExit[code] == ExitCode[code], code
    own = {c for c in LaunchExit if c.name not in ExitCode.__members__}
    assert all(c >= 10 for c in own), own


# -- JobSet ---------------------------------------------------------------------------------


def verdict_message(job: dict, index: int, exit_code: int) -> str:
    """The Job controller's message for a pod matching podFailurePolicy rule 0 (FailJob)."""
    pod = f"{job['metadata']['namespace']}/{job['metadata']['name']}-{index}-abcde"
    return (
        f"Container trainer for pod {pod} failed with exit code {exit_code} "
        "matching FailJob rule at index 0"
    )


def jobset_attempt(api: KubeApiServer, jobset: dict, codes: list[int], *, tag: str = "") -> dict:
    """One attempt of the JobSet's workers: its Job, and a pod per exit code (all finished)."""
    job = api.jobset_child_job(jobset)
    threads = []
    for index, code in enumerate(codes):
        thread = threading.Thread(
            target=api.run_pod,
            args=(job,),
            kwargs={"index": index, "logs": [f"{tag}step 1 worker {index}"], "exit_code": code},
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(10)
    return job


def test_jobset_success_streams_every_worker_and_exits_0(api, kubeconfig):
    def scenario(jobset):
        job = jobset_attempt(api, jobset, [0, 0])
        api.set_job_condition(job["metadata"]["name"], "Complete", reason="CompletionsReached")
        api.set_jobset_condition(
            jobset["metadata"]["name"],
            "Completed",
            reason="AllJobsCompleted",
            message="jobset completed successfully",
        )

    api.on_jobset_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s", "--workers=2", overlay="jobset")
    assert code == LaunchExit.OK, out
    for index in range(2):
        assert f"[worker {index}] step 1 worker {index}" in out
    (jobset,) = api.items("jobsets")
    name = jobset["metadata"]["name"]
    assert f"jobset/{name} submitted" in out
    assert jobset["metadata"]["labels"]["streamtrain.io/git-sha"] == "3f2a1bc"
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 2
    # Created through the custom objects API; JobSet, not the launcher, makes the Service.
    assert (
        "POST",
        "/apis/jobset.x-k8s.io/v1alpha2/namespaces/streamtrain/jobsets?fieldValidation=Strict",
    ) in api.requests
    assert api.items("services") == []
    # Its pods were found by the JobSet's label, across its child Job.
    assert any("jobset.sigs.k8s.io/jobset-name%3D" + name in path for _, path in api.requests)


def test_jobset_verdict_exits_with_the_trainers_code(api, kubeconfig):
    def scenario(jobset):
        job = jobset_attempt(api, jobset, [0, 3])
        name = job["metadata"]["name"]
        api.set_job_condition(
            name, "Failed", reason="PodFailurePolicy", message=verdict_message(job, 1, 3)
        )
        api.set_jobset_condition(
            jobset["metadata"]["name"],
            "Failed",
            reason="FailJobSetFailurePolicyAction",
            message=f"applying FailJobSet failure policy action (first failed job: {name})",
        )

    api.on_jobset_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s", "--workers=2", overlay="jobset")
    assert code == LaunchExit.QUALITY_GATE, out
    assert "failed: PodFailurePolicy: Container trainer for pod" in out
    assert "exit code 3 (Error)" in out


def test_jobset_restart_is_reported_and_its_new_pods_followed(api, kubeconfig, caplog):
    def scenario(jobset):
        name = jobset["metadata"]["name"]
        first = jobset_attempt(api, jobset, [0, 143])
        api.set_job_condition(
            first["metadata"]["name"],
            "Failed",
            reason="PodFailurePolicy",
            message=verdict_message(first, 1, 143).replace("index 0", "index 1"),
        )
        api.restart_jobset(
            name,
            rule="disruption",
            message="applying RestartJobSetAndIgnoreMaxRestarts failure policy action",
            counted=False,
        )
        second = jobset_attempt(api, jobset, [0, 0], tag="again ")
        api.set_job_condition(second["metadata"]["name"], "Complete", reason="CompletionsReached")
        api.set_jobset_condition(name, "Completed", reason="AllJobsCompleted")

    api.on_jobset_created = scenario
    with caplog.at_level(logging.INFO):
        code, out = run(kubeconfig, "--wait", "--timeout=30s", "--workers=2", overlay="jobset")
    assert code == LaunchExit.OK, out
    assert "[worker 1 restart 1] again step 1 worker 1" in out
    assert "restarting every worker (restart 1): FailurePolicy_disruption" in caplog.text


def test_jobset_past_its_deadline_exits_11(api, kubeconfig):
    def scenario(jobset):
        job = jobset_attempt(api, jobset, [143, 143])
        api.set_job_condition(
            job["metadata"]["name"],
            "Failed",
            reason="DeadlineExceeded",
            message="Job was active longer than specified deadline",
        )
        api.set_jobset_condition(
            jobset["metadata"]["name"],
            "Failed",
            reason="FailJobSetFailurePolicyAction",
            message="applying FailJobSet failure policy action",
        )

    api.on_jobset_created = scenario
    code, out = run(kubeconfig, "--wait", "--timeout=30s", "--workers=2", overlay="jobset")
    assert code == LaunchExit.JOB_DEADLINE, out
    assert "failed: DeadlineExceeded" in out


def test_cluster_without_jobset_exits_18_naming_it(api, kubeconfig, caplog):
    del api.served["jobset.x-k8s.io"]
    code, _ = run(kubeconfig, "--workers=2", overlay="jobset")
    assert code == LaunchExit.API_ERROR
    assert "404" in caplog.text and "install JobSet" in caplog.text


def test_jobset_name_conflict_exits_15(api, kubeconfig, caplog):
    api.put("jobsets", {"metadata": {"name": "nightly"}, "spec": {}})
    code, _ = run(kubeconfig, "--workers=2", "--name=nightly", overlay="jobset")
    assert code == LaunchExit.CONFLICT
    assert 'jobsets.jobset.x-k8s.io "nightly" already exists' in caplog.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers=1"], "--workers 1: --overlay jobset renders a JobSet"),
        (["--workers=64", "--name=" + "n" * 45], "--name: JobSet name"),
        (["--workers=2", "--name=1nightly"], "must start with a letter"),
    ],
)
def test_bad_jobset_input_exits_2_before_any_api_call(api, kubeconfig, caplog, flags, message):
    code, _ = run(kubeconfig, *flags, overlay="jobset")
    assert code == LaunchExit.BAD_INPUT
    assert message in caplog.text
    assert api.requests == []


# -- Kueue --------------------------------------------------------------------------------------

PENDING = [
    workload_condition(
        "QuotaReserved",
        False,
        reason="Pending",
        message="couldn't assign flavors to pod set main: insufficient quota for "
        "nvidia.com/gpu in flavor default-flavor, previously considered podsets requests (0) "
        "+ current podset request (2) > maximum capacity (0)",
    ),
    workload_condition(
        "Admitted", False, reason="NoReservation", message="The workload has no reservation"
    ),
]


@pytest.mark.parametrize(
    ("served", "read_as"),
    [(["v1beta2", "v1beta1"], "v1beta2"), (["v1beta1"], "v1beta1")],
)
def test_queued_job_timeout_says_what_its_workload_waits_for(
    api, kubeconfig, caplog, served, read_as
):
    api.served["kueue.x-k8s.io"] = served
    api.on_job_created = lambda job: api.add_workload(job, conditions=PENDING)
    with caplog.at_level(logging.INFO):
        code, _ = run(kubeconfig, "--queue=training", "--wait", "--timeout=2s")
    assert code == LaunchExit.TIMEOUT
    final = caplog.records[-1].getMessage()
    assert "--timeout 2s reached" in final
    assert "suspended by Kueue in LocalQueue training" in final
    assert "QuotaReserved False (Pending: couldn't assign flavors to pod set main" in final
    assert "Admitted False (NoReservation: The workload has no reservation)" in final
    (job,) = api.items("jobs")
    assert job["spec"]["suspend"] is True
    # Read in the version discovery found; the Workload is the one the Job owns.
    paths = [path for _, path in api.requests if "/workloads" in path]
    assert paths and all(f"/apis/kueue.x-k8s.io/{read_as}/" in p for p in paths)
    assert any(p.rstrip("/") == "/apis" for _, p in api.requests)


def test_queued_job_on_a_cluster_without_kueue_says_so(api, kubeconfig, caplog):
    del api.served["kueue.x-k8s.io"]
    code, _ = run(kubeconfig, "--queue=training", "--wait", "--timeout=2s")
    assert code == LaunchExit.TIMEOUT
    assert "serves no kueue.x-k8s.io API (is Kueue installed?)" in caplog.records[-1].getMessage()


def test_workload_of_another_job_is_not_taken_for_this_ones(api, kubeconfig, caplog):
    other = api.put("jobs", {"metadata": {"name": "someone-else"}, "spec": {}})
    api.add_workload(other, conditions=PENDING)
    code, _ = run(kubeconfig, "--queue=training", "--wait", "--timeout=2s")
    assert code == LaunchExit.TIMEOUT
    final = caplog.records[-1].getMessage()
    assert "no Workload owned by the Job yet" in final and "couldn't assign" not in final


def test_admitted_job_runs_to_completion(api, kubeconfig, caplog):
    def scenario(job):
        name = job["metadata"]["name"]
        workload = api.add_workload(job, conditions=PENDING)
        time.sleep(0.5)
        api.set_workload_status(
            workload["metadata"]["name"],
            conditions=[
                workload_condition("QuotaReserved", True, reason="QuotaReserved", message="ok"),
                workload_condition("Admitted", True, reason="Admitted", message="admitted"),
            ],
        )
        resumed = api.get("jobs", name)
        resumed["spec"]["suspend"] = False
        api.put("jobs", resumed)
        api.run_pod(resumed, index=0, logs=["training"], exit_code=0)
        api.set_job_condition(name, "Complete", reason="CompletionsReached")

    api.on_job_created = scenario
    with caplog.at_level(logging.INFO):
        code, out = run(kubeconfig, "--queue=training", "--wait", "--timeout=30s")
    assert code == LaunchExit.OK, out
    assert "[worker 0] training" in out
    assert "waiting: suspended by Kueue in LocalQueue training" in caplog.text
    assert "admitted: no longer suspended" in caplog.text


def test_queued_jobset_explains_its_admission_check(api, kubeconfig, caplog):
    """Flex-start: quota is reserved, the ProvisioningRequest admission check is pending."""
    check = {
        "name": "dws-prov",
        "state": "Pending",
        "message": "Waiting for resources. Currently there are not enough resources available "
        "to fulfill the request.",
        "lastTransitionTime": "2026-12-01T00:00:00Z",
    }

    def scenario(jobset):
        api.add_workload(
            jobset,
            conditions=[
                workload_condition("QuotaReserved", True, reason="QuotaReserved", message="ok"),
                workload_condition(
                    "Admitted",
                    False,
                    reason="UnsatisfiedAdmissionChecks",
                    message="The workload has not all admission checks",
                ),
            ],
            admission_checks=[check],
            pods=2,
        )

    api.on_jobset_created = scenario
    code, _ = run(
        kubeconfig, "--workers=2", "--queue=dws", "--wait", "--timeout=2s", overlay="jobset"
    )
    assert code == LaunchExit.TIMEOUT
    final = caplog.records[-1].getMessage()
    assert "the JobSet is suspended by Kueue in LocalQueue dws" in final
    assert "Admitted False (UnsatisfiedAdmissionChecks" in final
    assert "admission check dws-prov Pending: Waiting for resources." in final
    (jobset,) = api.items("jobsets")
    assert jobset["spec"]["suspend"] is True


def test_jobset_name_may_use_every_character_its_pod_names_leave(api, kubeconfig):
    """45 characters + "-workers-0-1-" + 5 random = 63 with 2 workers: accepted."""
    name = "n" * 45
    code, out = run(kubeconfig, "--workers=2", f"--name={name}", "--dry-run", overlay="jobset")
    assert code == LaunchExit.OK
    assert f"name: {name}" in out


def fuse_manifests(tmp_path: Path) -> Path:
    """A copy of k8s/ with an overlay `fuse`: gke plus components/gcsfuse (/data, read-only)."""
    import shutil

    manifests = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", manifests)
    (manifests / "overlays" / "fuse").mkdir()
    (manifests / "overlays" / "fuse" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\ncomponents:\n  - ../../components/gke\n"
        "  - ../../components/gcsfuse\n  - ../../components/params\n"
    )
    return manifests


def dry_run(*flags: str, manifests: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = launch(
        [
            "--dry-run",
            f"--kubectl={KUBECTL}",
            "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
            *([f"--manifests={manifests}"] if manifests else []),
            *flags,
        ],
        environ={},
        out=out,
    )
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("data", "output", "overlay", "message"),
    [
        (
            "/home/me/flowers",
            "gs://model-bkt/run1",
            "gke",
            "--data: '/home/me/flowers' is not on any volume of the pod (overlay gke mounts "
            "/dev/shm, /tmp, /var/cache/streamtrain in the trainer container); use a gs:// URI, "
            "or an overlay that mounts it (e.g. with components/gcsfuse",
        ),
        (
            "gs://data-bkt/flowers",
            "/tmp/run1",
            "gke",
            "--output: '/tmp/run1' is on /tmp, a scratch emptyDir of the pod (volume tmp)",
        ),
        (
            "/var/cache/streamtrain/flowers",
            "gs://model-bkt/run1",
            "multi-worker",
            "--data: '/var/cache/streamtrain/flowers' is on /var/cache/streamtrain, a scratch",
        ),
        (
            "/data/flowers",
            "gs://model-bkt/run1",
            "jobset",
            "--data: '/data/flowers' is not on any volume of the pod (overlay jobset",
        ),
        (
            "gs://data-bkt/flowers",
            "/data/run1",
            "fuse",
            "--output: '/data/run1' is on /data, which the pod mounts read-only",
        ),
        (
            "/data/../tmp/flowers",
            "gs://model-bkt/run1",
            "fuse",
            "--data: '/data/../tmp/flowers' is on /tmp, a scratch emptyDir",
        ),
    ],
)
def test_a_path_on_no_lasting_volume_of_the_pod_exits_2(
    tmp_path, caplog, data, output, overlay, message
):
    manifests = fuse_manifests(tmp_path) if overlay == "fuse" else None
    workers = ["--workers=2"] if overlay in ("multi-worker", "jobset") else []
    code, out = dry_run(
        f"--data={data}",
        f"--output={output}",
        f"--overlay={overlay}",
        *workers,
        manifests=manifests,
    )
    assert code == LaunchExit.BAD_INPUT
    assert out == ""
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_a_path_on_the_gcsfuse_mount_is_accepted(tmp_path):
    code, out = dry_run(
        "--data=/data/datasets/flowers",
        "--output=gs://model-bkt/run1",
        "--overlay=fuse",
        manifests=fuse_manifests(tmp_path),
    )
    assert code == LaunchExit.OK, out
    assert "value: /data/datasets/flowers" in out


@pytest.mark.parametrize("overlay", ["gke", "jobset"])
def test_metrics_sets_the_port_and_leaves_the_monitoring_to_kubectl(
    api, kubeconfig, caplog, overlay
):
    """--metrics adds components/metrics: the Job (a JobSet's workers) serves on the port its
    PodMonitoring scrapes; the PodMonitoring and NetworkPolicy are skipped, not created (the
    launcher's Role may not), and say so."""
    with caplog.at_level(logging.INFO):
        workers = "--workers=2" if overlay == "jobset" else "--workers=1"
        code, out = run(kubeconfig, "--metrics", workers, overlay=overlay)
    assert code == LaunchExit.OK, out
    if overlay == "jobset":
        (jobset,) = api.items("jobsets")
        pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    else:
        (job,) = api.items("jobs")
        pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "TRAINER_METRICS_PORT", "value": "9400"} in container["env"]
    assert {"name": "metrics", "containerPort": 9400} in container["ports"]
    created = [path for method, path in api.requests if method == "POST"]
    assert len(created) == 1 and "/jobs" in created[0], created
    assert "PodMonitoring/streamtrain-trainer: not created by the launcher" in caplog.text


def test_metrics_port_is_not_overridden_under_metrics(api, kubeconfig, caplog):
    code, _ = run(kubeconfig, "--metrics", "--trainer-env=TRAINER_METRICS_PORT=9090")
    assert code == LaunchExit.BAD_INPUT
    assert "--trainer-env: TRAINER_METRICS_PORT is set by --metrics" in caplog.text
    assert api.requests == []
    # Without --metrics it is the trainer's to serve, on a port no PodMonitoring names.
    assert run(kubeconfig, "--trainer-env=TRAINER_METRICS_PORT=9090", "--dry-run")[0] == 0


def test_metrics_on_an_overlay_that_lists_it_adds_it_once(tmp_path):
    """An overlay of one's own with components/metrics: --metrics does not add it again."""
    manifests = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", manifests)
    overlay = manifests / "overlays" / "gke-metrics"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\n"
        "components: [../../components/gke, ../../components/metrics, ../../components/params]\n"
    )
    out = io.StringIO()
    code = launch(
        [
            f"--manifests={manifests}",
            f"--kubectl={KUBECTL}",
            "--overlay=gke-metrics",
            "--metrics",
            "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
            "--data=gs://data-bkt/flowers",
            "--output=gs://model-bkt/run1",
            "--dry-run",
        ],
        environ={},
        out=out,
    )
    assert code == LaunchExit.OK
    kinds = [d["kind"] for d in yaml.safe_load_all(out.getvalue()) if d]
    assert kinds.count("PodMonitoring") == 1
