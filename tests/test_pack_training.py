"""`trainer train --data <packed>` end to end: 2 CPU replicas learn from shards on the emulator."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from support.trainer_runs import command as trainer_cmd
from support.trainer_runs import environ

from trainer.data.storage import Storage
from trainer.dev.emulator import free_port
from trainer.dev.synthetic import write_learnable_dataset
from trainer.pack.writer import PackConfig, pack

pytestmark = pytest.mark.slow


def test_two_replicas_learn_from_packed_shards(tmp_path, gcs_bucket, gcs_upload_tree, gcs_admin):
    write_learnable_dataset(
        str(tmp_path), classes=3, per_class=40, min_size=32, max_size=96, seed=4
    )
    gcs_upload_tree(str(tmp_path), f"gs://{gcs_bucket}/raw")
    packed = f"gs://{gcs_bucket}/packed"
    pack(PackConfig(source=f"gs://{gcs_bucket}/raw", output=packed, shard_size_mb=0.1), Storage())
    proc = subprocess.run(
        trainer_cmd(
            "--data",
            packed,
            "--output",
            f"gs://{gcs_bucket}/run",
            "--epochs",
            "5",
            "--batch-size",
            "16",
            "--cpu-replicas",
            "2",
            "--learning-rate",
            "0.003",
            "--image-size",
            "32",
            "--model",
            "small_cnn",
            "--log-every",
            "2",
            "--cache-dir",
            str(tmp_path / "shards"),
            "--cache-size-mb",
            "64",
        ),
        capture_output=True,
        text=True,
        env=environ(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(gcs_admin.bucket(gcs_bucket).blob("run/metrics.json").download_as_bytes())
    assert metrics["replicas"] == 2 and len(metrics["history"]) == 5
    assert metrics["dataset"]["objects"] == 120 and metrics["dataset"]["validation"] == 24
    assert metrics["final"]["val_accuracy"] >= 0.7
    for epoch in metrics["history"]:
        assert epoch["samples_fed_per_worker"] == [96]
    # The shard cache holds every shard once; nothing was listed.
    assert len(list((tmp_path / "shards").iterdir())) >= 2
    assert "listing" not in proc.stderr.lower()


def test_two_workers_train_on_disjoint_shards_and_stay_in_sync(tmp_path):
    src = tmp_path / "src"
    write_learnable_dataset(str(src), classes=3, per_class=20, min_size=32, max_size=64, seed=5)
    packed = tmp_path / "packed"
    pack(PackConfig(source=str(src), output=str(packed), shard_size_mb=0.03), Storage())
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                trainer_cmd(
                    "--data",
                    str(packed),
                    "--output",
                    str(tmp_path / "out"),
                    "--epochs",
                    "2",
                    "--batch-size",
                    "8",
                    "--image-size",
                    "32",
                    "--model",
                    "small_cnn",
                    "--cache-dir",
                    str(tmp_path / f"cache{index}"),
                    "--cache-size-mb",
                    "64",
                ),
                env=environ({"TF_CONFIG": json.dumps(tf_config)}),
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = [p.communicate(timeout=330)[1] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    digests = [re.search(r"final weights sha256 (\w+)", log).group(1) for log in logs]
    assert digests[0] == digests[1]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["workers"] == 2
    for epoch in metrics["history"]:
        # Distinct samples per worker: disjoint shards that cover the split once.
        assert sum(epoch["samples_fed_per_worker"]) == metrics["dataset"]["train"]
