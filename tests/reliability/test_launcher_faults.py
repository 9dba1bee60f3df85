"""Launcher faults, end to end: `scripts/launch.py` as a subprocess against the Kubernetes API
test server (tests/kube_api_server.py: the real `kubernetes` client, real JSON over HTTP).

API-side faults (unreachable server, bad kubeconfigs, 401, 403, 409, 422, 500, a Job deleted
while followed, a cluster without JobSet, Kueue Workloads the launcher may not read) must end
with the exit code documented in `launch.py --help`, one `ERROR` line naming the problem as
the last line of stderr, and no traceback. Bad launcher inputs
must exit 2 naming the flag before any API call: the test server must have received zero
requests.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_launcher_faults.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kube_api_server import KubeApiServer, status_body, unschedulable_status, workload_condition

from streamtrain_launcher.exitcodes import LaunchExit

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).parent / "kubectl")
BASE = (
    "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
    "--data=gs://data-bkt/flowers",
    "--output=gs://model-bkt/run1",
    "--git-sha=3f2a1bc",
    "--submitter=ci",
)


@dataclass
class Launch:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def last(self) -> str:
        """The last stderr line, as the report shows it."""
        return self.lines[-1] if self.lines else "(nothing on stderr)"


def launch(*args: str, env: dict[str, str] | None = None) -> Launch:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_", "KUBE"))}
    environ.update(env or {})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "scripts/launch.py", f"--kubectl={KUBECTL}", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Launch(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def one_error_line(result: Launch, *, allow_usage: bool = False) -> None:
    """Checks: one error line, the last; before it only progress lines; no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.lines if " ERROR " in line or ": error: " in line]
    assert len(errors) == 1 and result.lines[-1] == errors[0], result.stderr
    for line in result.lines[:-1]:
        usage = allow_usage and not line.startswith("launch: ")
        assert line.startswith(("launch: INFO ", "launch: WARNING ")) or usage, result.stderr


# --- API-side faults ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    injected: str
    code: LaunchExit
    names: tuple[str, ...]
    prepare: Callable[[KubeApiServer, Path, Path], list[str]]  # -> extra launcher args
    wait: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _unreachable(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    path = api.write_kubeconfig(tmp / "dead-kubeconfig", server=f"http://127.0.0.1:{port}")
    return [f"--kubeconfig={path}"]


def _file(content: bytes) -> Callable[[KubeApiServer, Path, Path], list[str]]:
    def prepare(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
        path = tmp / "garbage-kubeconfig"
        path.write_bytes(content)
        return [f"--kubeconfig={path}"]

    return prepare


def _missing_file(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    return [f"--kubeconfig={tmp / 'no-such-kubeconfig'}"]


def _missing_context(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    return [f"--kubeconfig={kubeconfig}", "--context=prod-cluster"]


def _unauthorized(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    api.token = "a-token-the-kubeconfig-does-not-have"
    return [f"--kubeconfig={kubeconfig}"]


def _status(code: int, reason: str, message: str):
    def prepare(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
        api.errors[("POST", "jobs")] = status_body(code, reason, message)
        return [f"--kubeconfig={kubeconfig}"]

    return prepare


def _conflict(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    api.put("jobs", {"metadata": {"name": "nightly"}, "spec": {}})
    return [f"--kubeconfig={kubeconfig}", "--name=nightly"]


def _no_jobset(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    del api.served["jobset.x-k8s.io"]
    return [f"--kubeconfig={kubeconfig}", "--overlay=jobset", "--workers=2"]


def _jobset_forbidden(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    api.errors[("POST", "jobsets")] = status_body(
        403,
        "Forbidden",
        'jobsets.jobset.x-k8s.io is forbidden: User "ci" cannot create resource "jobsets" in '
        'API group "jobset.x-k8s.io" in the namespace "streamtrain"',
    )
    return [f"--kubeconfig={kubeconfig}", "--overlay=jobset", "--workers=2"]


def _workloads_forbidden(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    api.errors[("GET", "workloads")] = status_body(
        403,
        "Forbidden",
        'workloads.kueue.x-k8s.io is forbidden: User "ci" cannot list resource "workloads"',
    )
    api.on_job_created = lambda job: api.add_workload(
        job, conditions=[workload_condition("QuotaReserved", False, reason="Pending", message="")]
    )
    return [f"--kubeconfig={kubeconfig}", "--queue=training", "--wait", "--timeout=2s"]


def _deleted(api: KubeApiServer, kubeconfig: Path, tmp: Path) -> list[str]:
    def scenario(job):
        api.add_pod(job, index=0, status=unschedulable_status("0/3 nodes are available"))
        time.sleep(0.5)
        api.delete("jobs", job["metadata"]["name"])

    api.on_job_created = scenario
    return [f"--kubeconfig={kubeconfig}", "--name=doomed", "--wait", "--timeout=30s"]


FAULTS = [
    Fault("API server unreachable", "kubeconfig pointing at a closed port",
          LaunchExit.API_UNREACHABLE, ("unreachable",), _unreachable),
    Fault("kubeconfig not YAML", "kubeconfig file `clusters: [unclosed`",
          LaunchExit.API_UNREACHABLE, ("garbage-kubeconfig",), _file(b"clusters: [unclosed\n")),
    Fault("kubeconfig binary garbage", "300 random bytes as the kubeconfig",
          LaunchExit.API_UNREACHABLE, ("garbage-kubeconfig",),
          _file(bytes(range(256)) + b"\x9c" * 44)),
    Fault("kubeconfig missing", "--kubeconfig naming no file", LaunchExit.API_UNREACHABLE,
          ("no-such-kubeconfig",), _missing_file),
    Fault("kubeconfig context missing", "--context prod-cluster, not in the kubeconfig",
          LaunchExit.API_UNREACHABLE, ("prod-cluster",), _missing_context),
    Fault("401 Unauthorized", "the server accepts another token", LaunchExit.API_DENIED,
          ("401",), _unauthorized),
    Fault("403 Forbidden", "POST jobs answered 403 Forbidden", LaunchExit.API_DENIED,
          ("403", 'cannot create resource "jobs"', "k8s/rbac"),
          _status(403, "Forbidden", 'jobs.batch is forbidden: User "ci" cannot create '
                  'resource "jobs" in API group "batch"')),
    Fault("409 name conflict", "a Job named `nightly` exists; --name=nightly",
          LaunchExit.CONFLICT, ('jobs.batch "nightly" already exists', "--name"), _conflict),
    Fault("422 invalid manifest", "POST jobs answered 422 Invalid", LaunchExit.INVALID,
          ("422", "containers[0].image: Required"),
          _status(422, "Invalid", 'Job.batch "x" is invalid: '
                  "spec.template.spec.containers[0].image: Required")),
    Fault("500 server error", "POST jobs answered 500", LaunchExit.API_ERROR,
          ("500", "etcdserver: request timed out"),
          _status(500, "InternalError", "etcdserver: request timed out")),
    Fault("Job deleted while followed", "--wait; the Job is deleted 0.5 s after creation",
          LaunchExit.JOB_DELETED, ("doomed", "deleted"), _deleted),
    Fault("JobSet not installed", "--overlay jobset; the cluster serves no jobset.x-k8s.io",
          LaunchExit.API_ERROR, ("404", "install JobSet"), _no_jobset),
    Fault("403 on JobSets", "POST jobsets answered 403 Forbidden", LaunchExit.API_DENIED,
          ("403", 'cannot create resource "jobsets"', "k8s/rbac"), _jobset_forbidden),
    Fault("Kueue Workloads forbidden", "--queue, --wait --timeout 2s; GET workloads answered 403",
          LaunchExit.TIMEOUT, ("suspended by Kueue", "403", "cannot list resource"),
          _workloads_forbidden),
]  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_api_fault_exits_with_its_code_and_one_line(fault, api, kubeconfig, tmp_path, row):
    result = launch(*BASE, *fault.prepare(api, kubeconfig, tmp_path))
    # Recorded first, so that a failing case still shows what happened.
    row(
        area="Launcher faults",
        case=fault.name,
        injected=fault.injected,
        observed=f"exit {result.code} in {result.seconds:.1f} s: "
        f"`{result.last.replace(str(tmp_path) + '/', '')}`",
    )
    assert result.code == fault.code, result.stderr
    one_error_line(result)
    for name in fault.names:
        assert name in result.last, f"{name!r} not in: {result.last}"


# --- every input validated before use ----------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    flag: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    usage: bool = False  # an argparse type error: usage lines precede the error line


BAD_INPUTS = [
    BadInput("--image", ("--image=trainer",), ("--image", "no tag or digest")),
    BadInput("--image", ("--image=r.io/st/trainer:latest",), ("--image", "latest")),
    BadInput("--image", ("--image=R.io/St/Trainer:v1 ; rm -rf /",), ("--image",)),
    BadInput("--data", ("--data=s3://bkt/x",), ("--data", "s3://bkt/x")),
    BadInput("--data", ("--data=gs://Bad_Bucket/x",), ("--data", "gs://Bad_Bucket/x")),
    BadInput("--output", ("--output=relative/path",), ("--output", "relative/path")),
    BadInput("--output", ("--output=gs://data-bkt/flowers",), ("--output", "--data")),
    BadInput("--gpus", ("--gpus=99",), ("--gpus", "99")),
    BadInput("--gpus", ("--gpus=-1",), ("--gpus", "-1")),
    BadInput("--gpus", ("--gpus=two",), ("--gpus", "two"), usage=True),
    BadInput("--workers", ("--workers=0",), ("--workers", "0")),
    BadInput("--workers", ("--workers=3",), ("--workers", "multi-worker")),
    BadInput("--workers", ("--overlay=jobset", "--workers=1"), ("--workers", "JobSet")),
    BadInput(
        "--name",
        ("--overlay=jobset", "--workers=2", "--name=" + "n" * 46),
        ("--name", "JobSet name", "at most"),
    ),
    BadInput("--namespace", ("--namespace=Bad_NS",), ("--namespace", "Bad_NS")),
    BadInput("--name", ("--name=Nightly_Run",), ("--name", "Nightly_Run")),
    BadInput("--name", ("--name=" + "x" * 51,), ("--name",)),
    BadInput("--queue", ("--queue=Team Queue",), ("--queue",)),
    BadInput("--name-prefix", ("--name-prefix=Team_A",), ("--name-prefix", "Team_A")),
    BadInput("--manifests", ("--manifests=/nonexistent",), ("/nonexistent",)),
    BadInput("--overlay", ("--overlay=../../etc",), ("--overlay",)),
    BadInput("--trainer-env", ("--trainer-env=PATH=/x",), ("--trainer-env", "PATH")),
    BadInput("--trainer-env", ("--trainer-env=TRAINER_DATA=gs://x/y",), ("TRAINER_DATA",)),
    BadInput("--timeout", ("--wait", "--timeout=soon"), ("--timeout", "soon"), usage=True),
    BadInput(
        "--metrics",
        ("--metrics", "--trainer-env=TRAINER_METRICS_PORT=9090"),
        ("--trainer-env", "TRAINER_METRICS_PORT is set by --metrics"),
    ),
    BadInput("LAUNCH_GPUS", (), ("--gpus", "many"), env={"LAUNCH_GPUS": "many"}, usage=True),
]


@pytest.mark.parametrize(
    "bad", BAD_INPUTS, ids=[" ".join(b.args) or str(b.env) for b in BAD_INPUTS]
)
def test_bad_launcher_input_exits_2_before_any_api_call(bad, api, kubeconfig, row):
    result = launch(*BASE, f"--kubeconfig={kubeconfig}", *bad.args, env=bad.env)
    shown = " ".join(bad.args) or " ".join(f"{k}={v}" for k, v in bad.env.items())
    row(
        area="Launcher faults",
        case=f"bad {bad.flag}",
        injected=shown if len(shown) < 60 else shown[:57] + "...",
        observed=f"exit {result.code}, API server saw {len(api.requests)} requests"
        + (", after argparse usage lines" if len(result.lines) > 1 else "")
        + f": `{result.last}`",
    )
    assert result.code == LaunchExit.BAD_INPUT, result.stderr
    one_error_line(result, allow_usage=bad.usage)
    for name in bad.names:
        assert name in result.last, f"{name!r} not in: {result.last}"
    assert api.requests == [], api.requests
