"""Transfer learning: a backbone this test pretrains, saved to the emulator, then fine-tuned.

The pretraining task has 8 classes and 320 images; the fine-tuning task 6 classes in other
colours with 18 training images. With the backbone frozen for the first epoch the fine-tuned
model beats the same run from scratch, and a run stopped (SIGTERM) in the frozen phase or in
the unfrozen phase and restarted ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import json

import pytest
from support.trainer_runs import run

from trainer.dev.synthetic import write_learnable_dataset

COMMON = (
    "--image-size", "32", "--model", "small_cnn", "--cpu-replicas", "2", "--batch-size", "4",
    "--log-every", "100", "--deterministic", "--val-split", "0.5", "--learning-rate", "0.003",
)  # fmt: skip


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, gcs_emulator) -> str:
    """gs://.../model.keras of a small CNN trained on 8 classes, in an emulator bucket."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    admin = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator},
    )
    root = tmp_path_factory.mktemp("pretrain")
    write_learnable_dataset(str(root), classes=8, per_class=40, min_size=32, max_size=64, seed=11)
    bucket = "pretrained-backbones"
    if admin.lookup_bucket(bucket) is None:
        admin.create_bucket(bucket)
    out = f"gs://{bucket}/shapes8"
    pre = run("--data", str(root), "--output", out, "--epochs", "3", *COMMON[:-4], "--batch-size",
              "16", "--val-split", "0.2", env={"STORAGE_EMULATOR_HOST": gcs_emulator})  # fmt: skip
    assert pre.code == 0, pre.log[-3000:]
    return f"{out}/model.keras"


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("few")
    write_learnable_dataset(str(root), classes=6, per_class=6, min_size=32, max_size=64, seed=12)
    return str(root)


def final(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_fine_tuned_backbone_beats_training_from_scratch(backbone, few, tmp_path, gcs_env):
    scratch = run("--data", few, "--output", str(tmp_path / "scratch"), "--epochs", "2", *COMMON)
    assert scratch.code == 0, scratch.log[-3000:]
    tuned = run(
        "--data", few, "--output", str(tmp_path / "tuned"), "--epochs", "2",
        "--weights", backbone, "--freeze-epochs", "1", *COMMON,
    )  # fmt: skip
    assert tuned.code == 0, tuned.log[-3000:]
    assert "epoch 1: backbone frozen, training the head" in tuned.log
    assert "epoch 2: backbone trainable" in tuned.log
    from_scratch = final(tmp_path / "scratch")["final"]["val_accuracy"]
    fine_tuned = final(tmp_path / "tuned")["final"]["val_accuracy"]
    print(f"val_accuracy from scratch {from_scratch:.3f}, fine-tuned {fine_tuned:.3f}")
    assert fine_tuned > from_scratch


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "phase"),
    [
        # make test resumes in the second phase, which also restores the frozen phase's
        # optimizer slots; make reliability also stops in the first.
        pytest.param("step@2", "frozen", marks=pytest.mark.full, id="frozen"),
        pytest.param("step@6", "unfrozen", id="unfrozen"),
    ],
)
def test_resume_in_either_phase_reproduces_the_uninterrupted_run(
    backbone, few, tmp_path, gcs_env, fault, phase
):
    args = ("--data", few, "--epochs", "2", "--weights", backbone, "--freeze-epochs", "1",
            "--trace-steps", "--checkpoint-every", "1", *COMMON)  # fmt: skip
    whole = run(*args, "--output", str(tmp_path / "whole"))
    assert whole.code == 0, whole.log[-3000:]
    stopped = run(*args, "--output", str(tmp_path / "resumed"), env={"STREAMTRAIN_FAULT": fault})
    assert stopped.code == 143, stopped.log[-3000:]
    again = run(*args, "--output", str(tmp_path / "resumed"))
    assert again.code == 0, again.log[-3000:]
    assert "resumed from checkpoint" in again.log
    assert ("backbone frozen" in again.log) == (phase == "frozen")
    reference, resumed = final(tmp_path / "whole"), final(tmp_path / "resumed")
    assert resumed["trace"] == reference["trace"]
    assert resumed["weights_sha256"] == reference["weights_sha256"]


def test_weights_that_do_not_fit_exit_2_with_one_line(few, tmp_path, gcs_env, backbone):
    # A small CNN's backbone under a MobileNet: nothing of it fits.
    bad = run("--data", few, "--output", str(tmp_path / "bad"), "--epochs", "2",
              "--weights", backbone, *COMMON[:2], "--model", "mobilenet_v3_small",
              *COMMON[4:])  # fmt: skip
    assert bad.code == 2, bad.log[-3000:]
    (line,) = bad.error_lines()
    assert "--weights" in line and "--model" in line


def test_a_weights_file_loads_into_the_backbone_and_a_wrong_one_exits_2(few, tmp_path):
    from trainer.model.zoo import build_model

    model = build_model("small_cnn", num_classes=2, image_size=(32, 32))
    good = tmp_path / "small.weights.h5"
    model.get_layer("backbone").save_weights(good)
    loaded = run("--data", few, "--output", str(tmp_path / "good"), "--epochs", "2",
                 "--weights", str(good), *COMMON)  # fmt: skip
    assert loaded.code == 0, loaded.log[-3000:]
    assert loaded.lines("backbone weights: .*small.weights.h5")
    wrong = tmp_path / "wrong.weights.h5"
    build_model("small_cnn", num_classes=2, image_size=(32, 32)).save_weights(wrong)
    bad = run("--data", few, "--output", str(tmp_path / "bad"), "--epochs", "2",
              "--weights", str(wrong), *COMMON)  # fmt: skip
    assert bad.code == 2, bad.log[-3000:]
    (line,) = bad.error_lines()
    assert "--weights" in line and "small_cnn" in line
