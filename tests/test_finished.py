"""trainer/export/finished.py: when a run in --output is complete, read from its files alone."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from trainer.data.storage import Storage
from trainer.errors import QualityGateError
from trainer.export.finished import complete_run
from trainer.export.outputs import Outputs
from trainer.train.checkpoint import Checkpointer


def finished_output(root, *, epochs=2, steps=6, success=True, gate=None, accuracies=None):
    """An --output as a run leaves it: checkpoints, metrics.json, _SUCCESS."""
    accuracies = accuracies or [0.5 + 0.1 * e for e in range(epochs)]
    (root / "checkpoints" / f"ckpt-{steps:09d}").mkdir(parents=True)
    (root / "checkpoints" / f"ckpt-{steps:09d}" / "COMMITTED").write_text("{}")
    metrics = {
        "history": [{"epoch": e + 1, "val_accuracy": a} for e, a in enumerate(accuracies)],
        "steps": steps,
        "exported": {"version": 1712345678},
        "quality_gate": gate or {"min_val_accuracy": None, "passed": False, "val_accuracy": 0.7},
        "dataset": {"fingerprint": "abc"},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    if success:
        (root / "_SUCCESS").write_text("")
    return root


def config(root, *, epochs=2, patience=0, gate=None):
    return SimpleNamespace(
        epochs=epochs,
        early_stopping_patience=patience,
        min_val_accuracy=gate,
        checkpoint_dir=str(root / "checkpoints"),
    )


def check(root, cfg, fingerprint="abc"):
    storage = Storage()
    return complete_run(cfg, Outputs(str(root), storage=storage), storage, fingerprint=fingerprint)


def test_a_complete_run_says_so_naming_its_export(tmp_path):
    finished_output(tmp_path)
    assert check(tmp_path, config(tmp_path)) == (
        f"the run in {tmp_path} is complete (epoch 2 of 2, exported as "
        "saved_model/1712345678); nothing to do — raise --epochs to train further"
    )


def test_more_epochs_a_missing_success_or_moved_checkpoints_mean_work_left(tmp_path):
    finished_output(tmp_path / "a")
    assert check(tmp_path / "a", config(tmp_path / "a", epochs=3)) is None
    finished_output(tmp_path / "b", success=False)
    assert check(tmp_path / "b", config(tmp_path / "b")) is None
    finished_output(tmp_path / "c", steps=6)
    (tmp_path / "c" / "checkpoints" / "ckpt-000000009").mkdir()
    (tmp_path / "c" / "checkpoints" / "ckpt-000000009" / "COMMITTED").write_text("{}")
    assert check(tmp_path / "c", config(tmp_path / "c")) is None


def test_a_run_stopped_early_is_complete_until_patience_or_epochs_rise(tmp_path):
    finished_output(tmp_path, epochs=3, steps=9, accuracies=[0.9, 0.8, 0.7])
    line = check(tmp_path, config(tmp_path, epochs=10, patience=2))
    assert "(stopped early at epoch 3 of 10," in line
    assert line.endswith("raise --epochs or --early-stopping-patience to train further")
    assert check(tmp_path, config(tmp_path, epochs=10, patience=5)) is None


def test_the_same_failed_gate_exits_3_again_another_gate_exports_again(tmp_path):
    gate = {"min_val_accuracy": 0.9, "passed": False, "val_accuracy": 0.7}
    finished_output(tmp_path, gate=gate)
    with pytest.raises(QualityGateError, match=r"failed the gate .*val_accuracy 0\.7000"):
        check(tmp_path, config(tmp_path, gate=0.9))
    assert check(tmp_path, config(tmp_path, gate=0.5)) is None


def test_another_dataset_is_warned_about(tmp_path, caplog):
    finished_output(tmp_path)
    assert check(tmp_path, config(tmp_path), fingerprint="def") is not None
    assert "was trained on another dataset (fingerprint abc, --data now has def)" in caplog.text


def test_a_relative_checkpoint_folder_finds_its_checkpoints(tmp_path, monkeypatch):
    finished_output(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    assert Checkpointer("out/checkpoints", storage=Storage()).latest_step() == 6
