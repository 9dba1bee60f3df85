"""Multi-worker faults: two worker processes on loopback, one of them killed or terminated.

The survivor must not hang: it exits with a clear error within a bounded time. Both restarted
workers then resume from the chief's checkpoint and finish in sync."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time

import pytest
from support.trainer_runs import command, environ

from trainer.dev.emulator import free_port
from trainer.dev.synthetic import write_learnable_dataset

AREA = "Multi-worker faults"
pytestmark = pytest.mark.full
ARGS = (
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--image-size",
    "24",
    "--val-split",
    "0.25",
    "--checkpoint-every",
    "3",
    "--log-every",
    "3",
    "--collective-timeout-s",
    "30",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw-data")
    write_learnable_dataset(str(root), classes=3, per_class=16, min_size=24, max_size=64, seed=3)
    return root


def start_pair(data, out, faults=("", "")):
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        env = {
            **environ(),
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        if faults[index]:
            env["STREAMTRAIN_FAULT"] = faults[index]
        # A file, not a pipe: nobody blocks on it. `finish` closes it.
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        proc = subprocess.Popen(
            command("--data", str(data), "--output", str(out), *ARGS),
            env=env,
            stderr=log,
            text=True,
        )
        procs.append((proc, log))
    return procs


def finish(procs):
    """Waits for both; returns exit codes, logs and when each process was seen to end."""
    ended = [None, None]
    deadline = time.monotonic() + 330
    while None in ended and time.monotonic() < deadline:
        for i, (proc, _) in enumerate(procs):
            if ended[i] is None and proc.poll() is not None:
                ended[i] = time.monotonic()
        time.sleep(0.1)
    logs = []
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.seek(0)
        logs.append(log.read())
        log.close()
    return [proc.returncode for proc, _ in procs], logs, ended


def restart_and_check(data, out):
    codes, logs, _ = finish(start_pair(data, out))
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    steps = {re.search(r"resumed from checkpoint at step (\d+)", log).group(1) for log in logs}
    digests = {re.search(r"final weights sha256 (\w+)", log).group(1) for log in logs}
    assert len(steps) == 1 and len(digests) == 1, (steps, digests)
    return steps.pop()


def test_killed_worker_fails_the_survivor_fast_then_both_resume(data, tmp_path, row):
    out = tmp_path / "out"
    codes, logs, ended = finish(start_pair(data, out, faults=("", "step@5:KILL")))
    assert codes[1] == -9
    assert codes[0] == 6, logs[0][-3000:]
    errors = [line for line in logs[0].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost contact with a peer" in errors[0]
    waited = ended[0] - ended[1]
    assert waited < 60, "the survivor did not hang"
    step = restart_and_check(data, out)
    row(
        area=AREA,
        case="one of two workers killed (SIGKILL)",
        injected="worker 1: STREAMTRAIN_FAULT=step@5:KILL; --collective-timeout-s 30",
        observed=f"worker 0 exit {codes[0]} about {waited:.0f} s after the kill: "
        f"{errors[0][:140]}; both restarted resumed at step {step} and ended with "
        "identical weights",
    )


def test_sigterm_to_one_worker_stops_both_at_the_same_step(data, tmp_path, row):
    out = tmp_path / "out"
    codes, logs, _ = finish(start_pair(data, out, faults=("", "step@4")))
    assert codes == [143, 143], logs[0][-2000:] + logs[1][-2000:]
    stopped = {
        re.search(
            r"at step (\d+)", next(line for line in log.splitlines() if line.startswith("error:"))
        ).group(1)
        for log in logs
    }
    assert len(stopped) == 1
    step = restart_and_check(data, out)
    assert step == stopped.pop()
    row(
        area=AREA,
        case="SIGTERM to one of two workers",
        injected="worker 1: STREAMTRAIN_FAULT=step@4 (SIGTERM)",
        observed=f"both workers stopped after step {step} (vote over the collective), exit "
        f"143 each; both restarted resumed at step {step}, identical final weights",
    )
