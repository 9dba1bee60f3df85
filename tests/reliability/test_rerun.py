"""Re-runs and leases: a complete run run again changes nothing, a higher --epochs continues
it, a second trainer on one --output is refused naming the first, a killed holder never
blocks its restart. Launcher inputs: an absolute path must lie on a lasting volume of the pod.

gs:// cases go through tests/support/preconditions.py: the emulator ignores ifGenerationMatch,
the proxy enforces it, so the lease's real requests meet GCS's answers.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.preconditions import GenerationMatchProxy
from support.trainer_runs import command, environ, run

from trainer.dev.emulator import EMULATOR_ENV
from trainer.dev.synthetic import write_learnable_dataset

AREA = "Data safety: re-runs and leases"
LAUNCHER = "Launcher inputs"
ROOT = Path(__file__).resolve().parents[2]
ARGS = ("--batch-size", "4", "--image-size", "24", "--val-split", "0.25", "--cpu-replicas", "1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun-data")
    write_learnable_dataset(str(root), classes=2, per_class=8, min_size=24, max_size=32, seed=3)
    return root


def last_line(log: str) -> str:
    return log.strip().splitlines()[-1]


def versions(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "saved_model").iterdir())


def test_a_complete_run_run_again_changes_nothing(data, tmp_path, row):
    out = tmp_path / "out"
    args = ("--data", str(data), "--output", str(out), "--epochs", "1", *ARGS)
    first = run(*args)
    assert first.code == 0, first.log[-2000:]
    before = (versions(out), (out / "metrics.json").read_bytes(), (out / "_SUCCESS").stat())
    again = run(*args)
    assert again.code == 0, again.log[-2000:]
    line = last_line(again.log)
    assert re.search(
        rf"INFO the run in {out} is complete \(epoch 1 of 1, exported as saved_model/"
        rf"{before[0][0]}\); nothing to do — raise --epochs to train further$",
        line,
    ), line
    assert "devices:" not in again.log, "TensorFlow started"
    assert versions(out) == before[0], "a new SavedModel version"
    assert (out / "metrics.json").read_bytes() == before[1]
    assert (out / "_SUCCESS").stat().st_mtime_ns == before[2].st_mtime_ns
    row(
        area=AREA,
        case="a complete run, run again",
        injected="the same `trainer train` command into a finished --output",
        observed=f"exit 0 in {again.seconds:.1f} s; "
        f"{line.split(' INFO ')[1].replace(str(out), 'OUT')}; no new "
        "saved_model version, metrics.json and _SUCCESS untouched",
    )


def test_a_higher_epochs_continues_a_complete_run(data, tmp_path, row):
    out = tmp_path / "out"
    base = ("--data", str(data), "--output", str(out), *ARGS)
    assert run(*base, "--epochs", "1").code == 0
    first = versions(out)
    more = run(*base, "--epochs", "2")
    assert more.code == 0, more.log[-2000:]
    resumed = more.lines(r"resumed from checkpoint at step")
    assert resumed and "epoch 2, batch 0 of 3" in resumed[0], resumed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert len(versions(out)) == 2 and versions(out)[0] == first[0]
    row(
        area=AREA,
        case="a complete run, --epochs raised",
        injected="--epochs 1 to the end, then the same command with --epochs 2",
        observed=f"exit 0; `{resumed[0].split(' INFO ')[1]}`; epoch 2 trained, a second "
        "saved_model version exported",
    )


def stopped_trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A trainer frozen (SIGSTOP) after its first step, still holding its lease."""
    proc = subprocess.Popen(
        command(*args),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environ({"STREAMTRAIN_FAULT": "step@1:STOP", **(env or {})}),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # `timeout` runs the trainer as its child; the child is the one that stops.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        states = [Path(f"/proc/{c}/stat").read_text().rsplit(") ", 1)[1][0] for c in children]
        if "T" in states:
            proc.trainer_pid = int(children[states.index("T")])  # type: ignore[attr-defined]
            return proc
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.2)
    raise AssertionError("the first trainer never reached its first step")


def resume_and_finish(proc: subprocess.Popen) -> int:
    import os

    os.kill(proc.trainer_pid, signal.SIGCONT)  # type: ignore[attr-defined]
    return proc.wait(timeout=120)


def check_refused(second, first_pid: int, output: str) -> str:
    assert second.code == 2, second.log[-2000:]
    errors = second.error_lines()
    assert len(errors) == 1 and errors == [last_line(second.log)], second.log[-2000:]
    assert "Traceback" not in second.log
    assert errors[0].startswith(f"error: --output {output}: another trainer is writing there")
    assert f"pid {first_pid}" in errors[0] and "started " in errors[0]
    assert "devices:" not in second.log, "TensorFlow started"
    return errors[0]


def test_a_second_trainer_on_a_local_output_is_refused(data, tmp_path, row):
    out = tmp_path / "out"
    args = ("--data", str(data), "--output", str(out), "--epochs", "1", *ARGS)
    first = stopped_trainer(*args)
    try:
        second = run(*args)
        line = check_refused(second, first.trainer_pid, str(out))
    finally:
        code = resume_and_finish(first)
    assert code == 0, first.stderr.read()[-2000:]
    assert (out / "_SUCCESS").exists()
    row(
        area=AREA,
        case="two trainers on one local --output",
        injected="a second `trainer train` while the first is in epoch 1",
        observed=f"the second exits 2: `{line.replace(str(out), 'OUT')}`; the first finishes "
        "with exit 0",
    )


@pytest.fixture
def lease_gcs(gcs_bucket, gcs_emulator):
    with GenerationMatchProxy(gcs_emulator) as proxy:
        yield gcs_bucket, {EMULATOR_ENV: proxy.url}


def test_a_second_trainer_on_a_gcs_output_is_refused(data, lease_gcs, gcs_admin, row):
    bucket, env = lease_gcs
    out = f"gs://{bucket}/runs/1"
    args = ("--data", str(data), "--output", out, "--epochs", "1", *ARGS)
    first = stopped_trainer(*args, "--job-name", "train-a", env=env)
    try:
        second = run(*args, "--job-name", "train-b", env=env)
        line = check_refused(second, first.trainer_pid, out)
        assert "job train-a" in line and "stale after 90s" in line
    finally:
        code = resume_and_finish(first)
    assert code == 0, first.stderr.read()[-2000:]
    assert gcs_admin.bucket(bucket).get_blob("runs/1/.streamtrain-lease") is None
    row(
        area=AREA,
        case="two trainers on one gs:// --output",
        injected="a second Job's trainer while the first is in epoch 1 (lease object "
        "created with ifGenerationMatch=0)",
        observed=f"the second exits 2: `{line.replace(out, 'gs://BUCKET/run')}`; the first "
        "finishes with exit 0 and deletes its lease",
    )


def test_a_killed_gcs_holder_does_not_block_its_restart(data, lease_gcs, row):
    bucket, env = lease_gcs
    out = f"gs://{bucket}/runs/2"
    args = ("--data", str(data), "--output", out, "--epochs", "2", *ARGS)
    killed = run(*args, env={**env, "STREAMTRAIN_FAULT": "step@5:KILL"})
    assert killed.code == -9, killed.log[-2000:]
    restarted = run(*args, env=env)
    assert restarted.code == 0, restarted.log[-2000:]
    took = restarted.lines(r"took over the lease")
    assert took and took[0].endswith("(its process is gone)"), restarted.log[-2000:]
    resumed = restarted.lines(r"resumed from checkpoint at step")
    assert resumed, restarted.log[-2000:]
    row(
        area=AREA,
        case="a gs:// holder killed with SIGKILL, then restarted",
        injected="STREAMTRAIN_FAULT=step@5:KILL (the lease object stays), then a restart",
        observed="exit -9 → 0; `"
        + took[0].split(" INFO ")[1]
        + f"`; `{resumed[0].split(' INFO ')[1]}`",
    )


def test_the_same_job_takes_its_lease_over_at_once(data, lease_gcs, row):
    bucket, env = lease_gcs
    out = f"gs://{bucket}/runs/3"
    args = ("--data", str(data), "--output", out, "--epochs", "1", *ARGS, "--job-name", "job-a")
    # The preempted pod's lease, fresh (renewed a moment ago), from another host.
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "from trainer.data.storage import Storage\n"
            "from trainer.train.lease import OutputLease\n"
            f"lease = OutputLease({out!r}, storage=Storage(), job_name='job-a')\n"
            "lease.holder['host'] = 'job-a-0-x7k2p'\n"
            "lease.acquire()\n",
        ],
        env=environ(env),
        check=True,
    )
    assert holder.returncode == 0
    restarted = run(*args, env=env)
    assert restarted.code == 0, restarted.log[-2000:]
    took = restarted.lines(r"took over the lease")
    assert took and "job job-a, host job-a-0-x7k2p" in took[0] and took[0].endswith("(same job)")
    row(
        area=AREA,
        case="a preempted pod's replacement (same Job)",
        injected="a fresh lease of job job-a from host job-a-0-x7k2p; the trainer restarts "
        "with TRAINER_JOB_NAME=job-a",
        observed=f"exit 0; `{took[0].split(' INFO ')[1]}`",
    )


LAUNCH_CASES = [
    ("/home/me/flowers", "gs://model-bkt/run1", "a local --data path"),
    ("gs://data-bkt/flowers", "/tmp/run1", "--output on the pod's /tmp (an emptyDir)"),
    ("/data/flowers", "gs://model-bkt/run1", "--data under /data without the gcsfuse component"),
]


@pytest.mark.parametrize(("data", "output", "case"), LAUNCH_CASES)
def test_launcher_refuses_a_path_on_no_lasting_volume(data, output, case, row):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "launch.py"),
            "--dry-run",
            f"--kubectl={Path(sys.executable).parent / 'kubectl'}",
            "--image=us-docker.pkg.dev/proj/st/trainer:3f2a1bc",
            f"--data={data}",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        env=environ(),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch: ERROR "), proc.stderr
    assert "use a gs:// URI, or an overlay that mounts it" in lines[0]
    row(
        area=LAUNCHER,
        case=case,
        injected=f"`launch.py --data {data} --output {output}` (overlay gke)",
        observed=f"exit 2: `{lines[0].removeprefix('launch: ERROR ')}`",
    )
