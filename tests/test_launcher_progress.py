"""The launcher's progress lines, read from the chief's JSON log: a real trainer run's stderr
(TRAINER_LOG_FORMAT=json) served as pod logs by the Kubernetes API test server, with a clock
the test moves instead of waiting 60 s.

    .venv/bin/pytest tests/test_launcher_progress.py
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from kube_api_server import KubeApiServer, running_status, terminated_status
from support.trainer_runs import run as run_trainer
from test_launcher import KUBECTL

from streamtrain_launcher.cli import launch
from streamtrain_launcher.exitcodes import LaunchExit
from streamtrain_launcher.progress import Progress, duration
from trainer.dev.synthetic import write_learnable_dataset

pytestmark = pytest.mark.slow  # one real training run for the module


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def trainer_log(tmp_path_factory) -> list[str]:
    """Every stderr line of a real 2-epoch run (5 steps an epoch) with TRAINER_LOG_FORMAT=json."""
    tmp = tmp_path_factory.mktemp("run")
    write_learnable_dataset(
        str(tmp / "data"), classes=2, per_class=12, min_size=16, max_size=32, seed=2
    )
    result = run_trainer(
        "--data", str(tmp / "data"), "--output", str(tmp / "out"), "--epochs", "2",
        "--batch-size", "4", "--image-size", "16", "--model", "linear", "--log-every", "2",
        env={"TRAINER_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert result.code == 0, result.log[-3000:]
    return result.log.splitlines()


def entries(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def after(lines: list[str], **fields: object) -> int:
    """The index just after the first JSON line that has these field values."""
    for i, line in enumerate(lines):
        if line.startswith("{") and fields.items() <= json.loads(line).items():
            return i + 1
    raise AssertionError(f"no line with {fields}")


def end_of_epoch(lines: list[str], epoch: int) -> int:
    """The index just after the epoch's last line (its `epoch N/M done` line)."""
    for i, line in enumerate(lines):
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("epoch") == epoch and "val_accuracy" in entry:
                return i + 1
    raise AssertionError(f"no end of epoch {epoch}")


def rate(entry: dict) -> str:
    value = entry["images_per_s"]
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def launch_with(
    kubeconfig: Path,
    out: io.StringIO,
    clock: Clock,
    *extra: str,
    overlay: str = "gke",
    environ: dict[str, str] | None = None,
) -> int:
    return launch(
        [
            f"--kubeconfig={kubeconfig}",
            f"--kubectl={KUBECTL}",
            f"--overlay={overlay}",
            "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
            "--data=gs://data-bkt/flowers",
            "--output=gs://model-bkt/run1",
            "--git-sha=3f2a1bc",
            "--submitter=ci",
            "--wait",
            *extra,
        ],
        environ=environ or {},
        out=out,
        clock=clock,
    )


def wait_for(out: io.StringIO, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in out.getvalue():
        assert time.monotonic() < deadline, f"no {text!r} in {out.getvalue()[-2000:]}"
        time.sleep(0.02)


def finish_pod(api: KubeApiServer, job: dict, pod: str, exit_code: int) -> None:
    api.log(pod, close=True)
    api.set_pod_status(pod, terminated_status(job, exit_code=exit_code))
    time.sleep(0.2)


def test_a_progress_line_every_minute_and_the_final_figures_last(api, kubeconfig, trainer_log):
    out, clock = io.StringIO(), Clock()
    cut = end_of_epoch(trainer_log, 1)

    def scenario(job):
        pod = api.add_pod(job, index=0, status=running_status(job))
        api.log(pod, *trainer_log[:cut])
        wait_for(out, trainer_log[cut - 1])
        clock.now += 60  # the launcher's minute, without the wait
        wait_for(out, "progress: ")
        api.log(pod, *trainer_log[cut:])
        finish_pod(api, job, pod, 0)
        api.set_job_condition(job["metadata"]["name"], "Complete", reason="CompletionsReached")

    api.on_job_created = scenario
    code = launch_with(kubeconfig, out, clock, "--timeout=60s")
    lines = out.getvalue().splitlines()
    assert code == LaunchExit.OK, lines
    # Every log line still passes through, JSON or not (TensorFlow's own lines are not JSON).
    assert all(f"[worker 0] {line}" in lines for line in trainer_log)
    last_step = [e for e in entries(trainer_log[:cut]) if "global_step" in e][-1]
    assert (last_step["global_step"], last_step["total_steps"]) == (5, 10)
    assert last_step["eta_s"] > 0
    epoch1, epoch2 = (e for e in entries(trainer_log) if "val_accuracy" in e)
    assert [line for line in lines if line.startswith("progress")] == [
        f"progress: epoch 1/2, step 5/10 (50%), {rate(epoch1)} images/s, "
        f"data-wait {epoch1['data_wait_fraction']:.0%}, "
        f"val_accuracy {epoch1['val_accuracy']:.4f} (epoch 1), ETA {duration(last_step['eta_s'])}",
        f"progress at the end: epoch 2/2, step 10/10 (100%), {rate(epoch2)} images/s, "
        f"data-wait {epoch2['data_wait_fraction']:.0%}, "
        f"val_accuracy {epoch2['val_accuracy']:.4f} (epoch 2)",
    ]
    assert lines[-1].startswith("progress at the end: ")


def test_a_failed_run_ends_with_its_progress_after_the_pod_report(api, kubeconfig, trainer_log):
    out = io.StringIO()
    cut = after(trainer_log, global_step=7)

    def scenario(job):
        pod = api.add_pod(job, index=0, status=running_status(job))
        api.log(pod, *trainer_log[:cut])
        finish_pod(api, job, pod, 143)
        api.set_job_condition(job["metadata"]["name"], "Failed", reason="DeadlineExceeded")

    api.on_job_created = scenario
    code = launch_with(kubeconfig, out, Clock(), "--timeout=60s")
    lines = out.getvalue().splitlines()
    assert code == LaunchExit.JOB_DEADLINE, lines
    assert "  exit code 143 (Error)" in lines
    step7 = entries(trainer_log[:cut])[-1]
    epoch1 = next(e for e in entries(trainer_log) if "val_accuracy" in e)
    assert lines[-1] == (
        f"progress at the end: epoch 2/2, step 7/10 (70%), {rate(step7)} images/s, "
        f"data-wait {step7['data_wait_fraction']:.0%}, "
        f"val_accuracy {epoch1['val_accuracy']:.4f} (epoch 1)"
    )


def test_on_timeout_the_last_line_is_the_chiefs_progress_with_its_eta(api, kubeconfig, trainer_log):
    """Worker 1 is further on (it logged the whole run): the chief's figures are the ones."""
    out = io.StringIO()
    cut = after(trainer_log, global_step=4)

    def scenario(job):
        chief = api.add_pod(job, index=0, status=running_status(job))
        other = api.add_pod(job, index=1, status=running_status(job))
        api.log(other, *trainer_log)
        api.log(chief, *trainer_log[:cut])

    api.on_job_created = scenario
    code = launch_with(
        kubeconfig, out, Clock(), "--timeout=4s", "--workers=2", overlay="multi-worker"
    )
    lines = out.getvalue().splitlines()
    assert code == LaunchExit.TIMEOUT, lines
    assert f"[worker 1] {trainer_log[-1]}" in lines
    step4 = entries(trainer_log[:cut])[-1]
    assert lines[-1] == (
        f"progress: epoch 1/2, step 4/10 (40%), {rate(step4)} images/s, "
        f"data-wait {step4['data_wait_fraction']:.0%}, ETA {duration(step4['eta_s'])}"
    )


def test_a_deleted_job_ends_with_its_progress(api, kubeconfig, trainer_log):
    out = io.StringIO()
    cut = after(trainer_log, global_step=2)

    def scenario(job):
        pod = api.add_pod(job, index=0, status=running_status(job))
        api.log(pod, *trainer_log[:cut])
        wait_for(out, trainer_log[cut - 1])
        api.delete("jobs", job["metadata"]["name"])

    api.on_job_created = scenario
    code = launch_with(kubeconfig, out, Clock(), "--timeout=60s")
    lines = out.getvalue().splitlines()
    assert code == LaunchExit.JOB_DELETED, lines
    assert lines[-1].startswith("progress at the end: epoch 1/2, step 2/10 (20%), ")
    assert "ETA" not in lines[-1]


def test_progress_every_0_prints_none(api, kubeconfig, trainer_log):
    out, clock = io.StringIO(), Clock()

    def scenario(job):
        clock.now += 3600
        pod = api.add_pod(job, index=0, status=running_status(job))
        api.log(pod, *trainer_log)
        finish_pod(api, job, pod, 0)
        api.set_job_condition(job["metadata"]["name"], "Complete", reason="CompletionsReached")

    api.on_job_created = scenario
    code = launch_with(kubeconfig, out, clock, "--timeout=60s", "--progress-every=0")
    assert code == LaunchExit.OK
    assert f"[worker 0] {trainer_log[-1]}" in out.getvalue()
    assert "progress" not in out.getvalue()


@pytest.mark.parametrize(
    ("flag", "environ"),
    [
        ("--progress-every=soon", {}),
        ("--progress-every=-5s", {}),
        ("", {"LAUNCH_PROGRESS_EVERY": "1x"}),
    ],
)
def test_a_bad_progress_every_exits_2_naming_the_flag(api, kubeconfig, capsys, flag, environ):
    with pytest.raises(SystemExit) as exit_:
        launch_with(kubeconfig, io.StringIO(), Clock(), *filter(None, [flag]), environ=environ)
    assert exit_.value.code == LaunchExit.BAD_INPUT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("launch: ERROR argument --progress-every: ")
    assert "0 for no progress lines" in line
    assert api.requests == []


def test_lines_of_another_shape_are_passed_over():
    """Not JSON, not an object, or fields of another type: no figures, no crash."""
    printed: list[str] = []
    progress = Progress(every_s=60, emit=printed.append)
    for line in (
        "plain text",
        "{not json",
        "[1, 2]",
        json.dumps({"epoch": 1, "step": 2, "steps": 5, "images_per_s": "fast",
                    "data_wait_fraction": 0.1}),
    ):  # fmt: skip
        progress.read(line)
    progress.finish(ended=True)
    assert printed == []
