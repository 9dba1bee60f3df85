"""The trainer CLI end to end, in subprocesses, with real TensorFlow strategies.

* 2-replica MirroredStrategy (2 logical CPU devices) learns a learnable dataset read from gs://;
* 2-process MultiWorkerMirroredStrategy on loopback: identical final weights, half the objects each;
* SIGTERM in the middle of an epoch, then a restart, reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.trainer_runs import command as trainer_cmd
from support.trainer_runs import environ

from trainer.dev.emulator import free_port
from trainer.dev.synthetic import write_learnable_dataset

pytestmark = pytest.mark.slow


def run_trainer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        trainer_cmd(*args), capture_output=True, text=True, env=environ(env), check=False
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_learnable_dataset(str(root), classes=3, per_class=40, min_size=32, max_size=96, seed=4)
    return root


COMMON = ("--image-size", "32", "--model", "small_cnn", "--log-every", "2")


def test_two_replicas_learn_from_gcs_and_write_every_output(
    shapes, gcs_bucket, gcs_upload_tree, gcs_admin
):
    gcs_upload_tree(str(shapes), f"gs://{gcs_bucket}/data")
    out = f"gs://{gcs_bucket}/run"
    proc = run_trainer(
        "--data",
        f"gs://{gcs_bucket}/data",
        "--output",
        out,
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--cpu-replicas",
        "2",
        "--min-val-accuracy",
        "0.85",
        "--learning-rate",
        "0.003",
        *COMMON,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr
    assert "replicas 2" in log and "per replica 8" in log
    assert "augmentation (--augment): none" in log
    # Checkpoints count epochs as the progress lines do: the last one ends epoch 6.
    assert re.search(r"checkpoint \S+ written \(epoch 6, step (\d+)/\1\)", log), log[-2000:]
    bucket = gcs_admin.bucket(gcs_bucket)
    names = {b.name for b in bucket.list_blobs(prefix="run/")}
    for expected in (
        "run/model.keras",
        "run/labels.txt",
        "run/metrics.json",
        "run/BLESSED",
        "run/_SUCCESS",
    ):
        assert expected in names, expected
    assert any(n.startswith("run/tensorboard/events.out.tfevents") for n in names)
    assert any(n.startswith("run/checkpoints/ckpt-") for n in names)
    metrics = json.loads(bucket.blob("run/metrics.json").download_as_bytes())
    # The serving export is a numbered version under the model base path saved_model/.
    version = metrics["exported"]["version"]
    assert metrics["exported"]["saved_model"] == f"{out}/saved_model/{version}"
    assert f"run/saved_model/{version}/saved_model.pb" in names
    assert metrics["replicas"] == 2 and metrics["workers"] == 1
    assert metrics["final"]["val_accuracy"] >= 0.85
    assert metrics["quality_gate"]["passed"] is True
    assert len(metrics["history"]) == 6
    assert bucket.blob("run/labels.txt").download_as_text().split() == [
        "circle",
        "square",
        "stripes",
    ]
    # Validation counts every held-out object exactly once (24 of 120).
    assert metrics["final"]["val_samples"] == 24


def test_two_workers_stay_in_sync_and_each_reads_half(shapes, tmp_path):
    ports = [free_port(), free_port()]
    workers = [f"127.0.0.1:{p}" for p in ports]
    out = tmp_path / "out"
    procs = []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                trainer_cmd(
                    "--data",
                    str(shapes),
                    "--output",
                    str(out),
                    "--epochs",
                    "2",
                    "--batch-size",
                    "8",
                    "--val-split",
                    "0.2",
                    *COMMON,
                ),
                env=environ({"TF_CONFIG": tf_config}),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = [p.communicate(timeout=330)[1] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    digests = [re.search(r"final weights sha256 (\w+)", log).group(1) for log in logs]
    assert digests[0] == digests[1]
    assert re.search(r"strategy: MultiWorkerMirroredStrategy\w*, replicas 2, workers 2", logs[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workers"] == 2
    for epoch in metrics["history"]:
        assert epoch["samples_fed_per_worker"] == [48, 48]  # 96 training objects, halves
    assert not (out / "quarantine").exists()


# `make test` covers this with reliability/test_preemption.py's "SIGTERM in the middle of epoch 1"
# (the same trace and weights check) and test_image.py's SIGTERM to a container.
@pytest.mark.full
def test_sigterm_mid_epoch_then_restart_reproduces_the_uninterrupted_run(shapes, tmp_path):
    args = (
        "--data",
        str(shapes),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--cpu-replicas",
        "2",
        "--trace-steps",
        "--deterministic",
        "--checkpoint-every",
        "1000",
        "--val-split",
        "0.2",
        *COMMON,
    )
    full = run_trainer(*args, "--output", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    reference = json.loads((tmp_path / "full" / "metrics.json").read_text())

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        trainer_cmd(*args, "--output", str(out)), stderr=subprocess.PIPE, text=True, env=environ()
    )
    lines = []
    for line in proc.stderr:  # wait until training is well into epoch 1
        lines.append(line)
        if re.search(r"epoch 1/2 step 10/24", line):
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) == 143, "".join(lines)[-3000:]
    log = "".join(lines)
    assert "SIGTERM received" in log and "checkpoint written" in log
    assert not (out / "_SUCCESS").exists()
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+)", log).group(1))
    assert 10 <= stopped_at < 24, "stopped in the middle of the first epoch"

    resumed = run_trainer(*args, "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from checkpoint at step {stopped_at}: epoch 1, batch {stopped_at}" in (
        resumed.stderr
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s for s, _ in metrics["trace"]] == list(range(48))
    assert metrics["trace"] == reference["trace"], "same samples in the same order"
    assert metrics["weights_sha256"] == reference["weights_sha256"]
    assert [h["samples"] for h in metrics["history"]] == [96, 96]


def test_bad_configuration_exits_2_with_one_line(tmp_path):
    start = time.monotonic()
    proc = run_trainer("--data", "s3://bucket/x", "--output", str(tmp_path))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--data" in lines[0] and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60  # a hang guard, not a speed assertion


def test_initial_weights_from_a_previous_run(shapes, tmp_path):
    first = run_trainer(
        "--data",
        str(shapes),
        "--output",
        str(tmp_path / "a"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        *COMMON,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_trainer(
        "--data",
        str(shapes),
        "--output",
        str(tmp_path / "b"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-steps-per-epoch",
        "1",
        "--learning-rate",
        "1e-9",
        "--init-weights",
        str(tmp_path / "a" / "model.keras"),
        *COMMON,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "initial weights loaded from" in second.stderr
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["final"]["val_accuracy"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["final"]["val_accuracy"]
    assert b == pytest.approx(a, abs=0.05), "one near-zero step keeps what was learned"
    wrong = run_trainer(
        "--data",
        str(shapes),
        "--output",
        str(tmp_path / "c"),
        "--epochs",
        "1",
        "--model",
        "mobilenet_v3_small",
        "--image-size",
        "32",
        "--init-weights",
        str(tmp_path / "a" / "model.keras"),
    )
    assert wrong.returncode == 2, wrong.stderr[-2000:]
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: --init-weights")


def test_quality_gate_miss_exits_3_with_outputs_but_no_blessed(shapes, tmp_path):
    out = tmp_path / "gate"
    proc = run_trainer(
        "--data",
        str(shapes),
        "--output",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-steps-per-epoch",
        "1",
        "--min-val-accuracy",
        "0.999",
        *COMMON,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --min-val-accuracy 0.999: validation accuracy")
    assert (out / "model.keras").exists() and (out / "_SUCCESS").exists()
    assert not (out / "BLESSED").exists()
    gate = json.loads((out / "metrics.json").read_text())["quality_gate"]
    assert gate["passed"] is False and gate["val_accuracy"] < 0.999
