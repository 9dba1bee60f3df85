"""Optimisation, augmentation and metrics options, each through the real trainer CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.trainer_runs import run

from trainer.dev.synthetic import write_learnable_dataset

COMMON = ("--image-size", "32", "--model", "small_cnn", "--cpu-replicas", "2",
          "--batch-size", "8", "--log-every", "100", "--deterministic")  # fmt: skip


@pytest.fixture(scope="module")
def six(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("six")
    write_learnable_dataset(str(root), classes=6, per_class=10, min_size=32, max_size=48, seed=6)
    return str(root)


def metrics_of(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_every_optimisation_option_trains_and_is_applied(six, tmp_path):
    out = tmp_path / "out"
    result = run(
        "--data", six, "--output", str(out), "--epochs", "4", "--optimizer", "sgd",
        "--momentum", "0.9", "--learning-rate", "0.05", "--weight-decay", "0.0001",
        "--lr-schedule", "cosine", "--warmup-epochs", "1", "--label-smoothing", "0.1",
        "--clip-norm", "1.0", "--class-weight", "balanced", "--augment", "basic",
        "--jit-compile", "on", *COMMON,
    )  # fmt: skip
    assert result.code == 0, result.log[-3000:]
    assert result.lines("sgd learning rate 0.05 \\(cosine, 1 warmup epochs\\)")
    metrics = metrics_of(out)
    assert metrics["final"]["val_accuracy"] > 1 / 6 + 0.2, metrics["final"]
    assert metrics["config"]["clip_norm"] == 1.0


@pytest.mark.slow
def test_metrics_people_read(six, tmp_path):
    out = tmp_path / "out"
    result = run("--data", six, "--output", str(out), "--epochs", "3", *COMMON)
    assert result.code == 0, result.log[-3000:]
    metrics = metrics_of(out)
    final = metrics["final"]
    assert 0 <= final["val_accuracy"] <= final["val_top5_accuracy"] <= 1
    assert set(final["val_per_class"]) == set(metrics["class_names"])
    for figures in final["val_per_class"].values():
        assert {"precision", "recall", "support"} <= set(figures)
    confusion = np.asarray(metrics["val_confusion"])
    assert confusion.shape == (6, 6) and confusion.sum() == final["val_samples"]
    assert np.trace(confusion) == round(final["val_accuracy"] * final["val_samples"])
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --keep best (the default): the exported epoch is the best by validation accuracy.
    scores = [h["val_accuracy"] for h in metrics["history"]]
    assert metrics["kept"] == {"keep": "best", "epoch": int(np.argmax(scores)) + 1}
    assert final["val_accuracy"] == max(scores)
    tags = set()
    import tensorflow as tf

    for path in (out / "tensorboard").glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags |= {v.tag for v in event.summary.value}
    assert {"val_accuracy", "val_top5_accuracy", "val_confusion_matrix"} <= tags


@pytest.mark.slow
@pytest.mark.full  # 4 runs; make test checks the seeded draw in test_augment, resumes elsewhere
def test_augmentation_is_drawn_from_seed_and_step_so_a_resumed_run_matches(six, tmp_path):
    args = ("--data", six, "--epochs", "2", "--augment", "strong", "--checkpoint-every", "1",
            *COMMON)  # fmt: skip
    whole = run(*args, "--output", str(tmp_path / "whole"))
    plain = run(*args[:4], "--augment", "none", *args[6:], "--output", str(tmp_path / "plain"))
    stopped = run(*args, "--output", str(tmp_path / "again"), env={"STREAMTRAIN_FAULT": "step@5"})
    again = run(*args, "--output", str(tmp_path / "again"))
    assert (whole.code, plain.code, stopped.code, again.code) == (0, 0, 143, 0), again.log[-2000:]
    reference = metrics_of(tmp_path / "whole")["weights_sha256"]
    assert metrics_of(tmp_path / "again")["weights_sha256"] == reference
    assert metrics_of(tmp_path / "plain")["weights_sha256"] != reference, "augmentation ran"


@pytest.mark.slow
def test_early_stopping_ends_the_run_when_validation_stops_improving(six, tmp_path):
    out = tmp_path / "out"
    result = run("--data", six, "--output", str(out), "--epochs", "6", "--learning-rate",
                 "1e-9", "--early-stopping-patience", "1", "--keep", "last", *COMMON)  # fmt: skip
    assert result.code == 0, result.log[-3000:]
    assert result.lines("early stopping: validation accuracy has not improved for 1 epochs")
    history = metrics_of(out)["history"]
    assert len(history) == 2
    assert metrics_of(out)["kept"] == {"keep": "last", "epoch": 2}


@pytest.mark.slow
def test_json_logs_carry_the_step_figures(six, tmp_path):
    result = run("--data", six, "--output", str(tmp_path / "out"), "--epochs", "1",
                 "--log-format", "json", "--log-every", "1", *COMMON[:-3])  # fmt: skip
    assert result.code == 0, result.log[-3000:]
    ours = [json.loads(line) for line in result.log.splitlines() if line.startswith("{")]
    assert ours and all({"severity", "message", "time"} <= set(entry) for entry in ours)
    steps = [e for e in ours if "step" in e and "loss" in e]
    assert steps and steps[0]["epoch"] == 1 and steps[0]["images_per_s"] > 0
    assert any("val_accuracy" in e for e in ours)
