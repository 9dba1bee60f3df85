"""scripts/launch.py against a Kubernetes API test server (tests/kube_api_server.py): the real
`kubernetes` client, real JSON over HTTP, a kubeconfig file. One test per scenario: success,
failure with the trainer's exit code and termination message, Pending until --timeout, 409,
401, 403, 422, unreachable, watch expiry (410), the Job deleted, bad input before any call.

    .venv/bin/pytest tests/test_launcher.py
"""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kube_api_server import (
    KubeApiServer,
    status_body,
    terminated_status,
    unschedulable_status,
    waiting_status,
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


def test_shared_exit_codes_equal_the_trainers():
    from trainer.errors import ExitCode

    for code in ("OK", "BAD_INPUT", "QUALITY_GATE", "NO_GPU", "STORAGE_UNAVAILABLE"):
        assert LaunchExit[code] == ExitCode[code], code
    own = {c for c in LaunchExit if c.name not in ExitCode.__members__}
    assert all(c >= 10 for c in own), own
