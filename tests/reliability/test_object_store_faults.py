"""Object-store faults during training, through a fault-injecting proxy in front of the emulator.

Transient faults are retried: training completes, every sample is read and used exactly once per
epoch, nothing is quarantined, and the final weights equal a fault-free run's. Faults that outlast
the retry deadline end the run with exit code 5 and one line; the checkpoint stays intact and a
restart resumes from it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from support.trainer_runs import command, metrics, run

from trainer.dev.synthetic import write_learnable_dataset

AREA = "Object-store faults"
TRAIN_OBJECTS = 54  # 72 objects, 18 held out
ARGS = (
    "--epochs",
    "3",
    "--batch-size",
    "6",
    "--cpu-replicas",
    "2",
    "--image-size",
    "24",
    "--val-split",
    "0.25",
    "--deterministic",
    "--trace-steps",
    "--log-every",
    "3",
    "--request-timeout-s",
    "1",
    "--storage-deadline-s",
    "30",
    "--prefetch-batches",
    "1",
)


@pytest.fixture(scope="module")
def local_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-data")
    write_learnable_dataset(str(root), classes=3, per_class=24, min_size=24, max_size=64, seed=5)
    return root


@pytest.fixture
def bucket_data(local_data, gcs_bucket, gcs_upload_tree):
    gcs_upload_tree(str(local_data), f"gs://{gcs_bucket}/data")
    return f"gs://{gcs_bucket}/data"


@pytest.fixture(scope="module")
def reference(local_data, tmp_path_factory):
    # The same objects read from local disk: what a fault-free run computes.
    out = tmp_path_factory.mktemp("fault-reference")
    done = run("--data", str(local_data), "--output", str(out), *ARGS)
    assert done.code == 0, done.log[-3000:]
    return metrics(out)


CASES = [
    pytest.param({"status_503": 0.01}, "503 on 1% of reads", marks=pytest.mark.full),
    pytest.param({"status_503": 0.10}, "503 on 10% of reads"),
    pytest.param({"status_503": 0.30}, "503 on 30% of reads", marks=pytest.mark.full),
    pytest.param({"status_429": 0.10}, "429 on 10% of reads", marks=pytest.mark.full),
    pytest.param(
        {"status_429": 0.30, "status_503": 0.0}, "429 on 30% of reads", marks=pytest.mark.full
    ),
    pytest.param({"reset": 0.10}, "connection resets on 10% of reads", marks=pytest.mark.full),
    pytest.param({"truncate": 0.10}, "truncated bodies on 10% of reads", marks=pytest.mark.full),
    pytest.param(
        {"stall": 0.05, "stall_s": 3.0},
        "stalls of 3 s (request timeout 1 s) on 5% of reads",
        marks=pytest.mark.full,
    ),
]


@pytest.mark.parametrize(("faults", "case"), CASES)
def test_transient_faults_lose_nothing(
    bucket_data, reference, fault_proxy, tmp_path, row, faults, case
):
    proxy = fault_proxy(only_paths="alt=media", seed=11, **faults)
    out = tmp_path / "out"
    done = run(
        "--data", bucket_data, "--output", str(out), *ARGS, env={"STORAGE_EMULATOR_HOST": proxy.url}
    )
    assert done.code == 0, done.log[-3000:]
    final = metrics(out)
    stats = proxy.stats()
    injected = {k: v for k, v in stats.items() if k in faults and not k.endswith("_s") and v}
    assert sum(injected.values()) > 0, f"no fault was injected: {stats}"
    for epoch in final["history"]:
        assert epoch["samples_fed_per_worker"] == [TRAIN_OBJECTS]
        assert epoch["samples"] == TRAIN_OBJECTS  # batches of 6 divide 54: no padding
    assert final["quarantined"] == []
    assert final["counters"]["retries"] > 0
    assert final["trace"] == reference["trace"]
    assert final["weights_sha256"] == reference["weights_sha256"]
    row(
        area=AREA,
        case=case,
        injected=f"{faults} on media reads; injected {injected} of {stats['requests']} requests",
        observed=f"exit 0; {final['counters']['retries']:.0f} retries; every epoch read and used "
        f"all {TRAIN_OBJECTS} training objects once; 0 quarantined; final weights equal "
        "the fault-free run's",
    )


def test_faults_past_the_deadline_exit_5_with_an_intact_checkpoint(
    bucket_data, reference, fault_proxy, tmp_path, row
):
    proxy = fault_proxy(only_paths="alt=media", seed=1)
    out = tmp_path / "out"
    args = (
        "--data",
        bucket_data,
        "--output",
        str(out),
        *ARGS[:-4],
        "--storage-deadline-s",
        "3",
        "--prefetch-batches",
        "1",
        "--checkpoint-every",
        "3",
    )
    env = {**os.environ, "STORAGE_EMULATOR_HOST": proxy.url}
    proc = subprocess.Popen(command(*args), env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "checkpoint" in line and "written" in line:
            proxy.configure(status_503=1.0)  # the store goes down, for good
            break
    lines += proc.stderr.readlines()
    code = proc.wait(timeout=120)
    log = "".join(lines)
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 5, log[-3000:]
    assert len(errors) == 1 and "Traceback" not in log
    assert re.search(r"gs://\S+/data/\S+", errors[0]), errors[0]
    committed = sorted(p.parent.name for p in (out / "checkpoints").glob("*/COMMITTED"))
    assert committed
    proxy.configure(status_503=0.0)
    restarted = run(*args, env={"STORAGE_EMULATOR_HOST": proxy.url})
    assert restarted.code == 0, restarted.log[-3000:]
    step = re.search(r"resumed from checkpoint at step (\d+)", restarted.log).group(1)
    assert f"ckpt-{int(step):09d}" in committed
    assert metrics(out)["weights_sha256"] == reference["weights_sha256"]
    row(
        area=AREA,
        case="store down past the retry deadline",
        injected="after the first checkpoint, 503 on every read; --storage-deadline-s 3",
        observed=f"exit {code}: {errors[0].strip()[:150]}; committed checkpoints {committed} "
        f"intact; restart resumed at step {step} and matched the fault-free weights",
    )
