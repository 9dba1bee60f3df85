"""Checkpoints: atomic commit by marker, damaged ones skipped, pruning, a mismatched model."""

import os

import keras
import numpy as np
import pytest
from support.faults import FaultPlan

from trainer.data.storage import Storage
from trainer.errors import ConfigError
from trainer.model.zoo import build_model
from trainer.train.checkpoint import Checkpointer


def make(num_classes=3):
    model = build_model("small_cnn", num_classes=num_classes, image_size=(16, 16))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_save_restore_round_trip_and_pruning(tmp_path):
    model, optimizer = make()
    ckpt = Checkpointer(str(tmp_path), storage=Storage(), keep=2)
    for step in (3, 6, 9):
        model.variables[0].assign(np.full(model.variables[0].shape, step, np.float32))
        ckpt.save(step, model=model, optimizer=optimizer, state={"epoch": 0, "batch": step})
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000006", "ckpt-000000009"]
    fresh, fresh_opt = make()
    state = Checkpointer(str(tmp_path), storage=Storage()).restore(model=fresh, optimizer=fresh_opt)
    assert state["step"] == 9 and state["batch"] == 9
    assert np.all(fresh.variables[0].numpy() == 9)


def test_uncommitted_and_damaged_checkpoints_are_never_resumed(tmp_path):
    model, optimizer = make()
    ckpt = Checkpointer(str(tmp_path), storage=Storage(), keep=5)
    ckpt.save(4, model=model, optimizer=optimizer, state={})
    # A writer killed between its data files and the marker leaves an uncommitted folder.
    half = tmp_path / "ckpt-000000008"
    half.mkdir()
    (half / "weights.npz").write_bytes(b"partial")
    assert ckpt.latest_step() == 4
    ckpt.save(12, model=model, optimizer=optimizer, state={})
    (tmp_path / "ckpt-000000012" / "weights.npz").write_bytes(b"bit rot")
    fresh, fresh_opt = make()
    state = Checkpointer(str(tmp_path), storage=Storage()).restore(model=fresh, optimizer=fresh_opt)
    assert state["step"] == 4, "checksum mismatch falls back to the older checkpoint"
    assert not half.exists(), "the uncommitted folder was pruned by the next save"


def test_a_checkpoint_of_another_model_is_a_config_error(tmp_path):
    model, optimizer = make(num_classes=3)
    Checkpointer(str(tmp_path), storage=Storage()).save(
        1, model=model, optimizer=optimizer, state={}
    )
    other, other_opt = make(num_classes=5)
    with pytest.raises(ConfigError, match="does not match this model"):
        Checkpointer(str(tmp_path), storage=Storage()).restore(model=other, optimizer=other_opt)


def test_fault_plan_parsing():
    assert FaultPlan.from_env({})._faults == {}
    plan = FaultPlan.from_env({"STREAMTRAIN_FAULT": "step@3, checkpoint_write@1:KILL"})
    assert set(plan._faults) == {"step", "checkpoint_write"}
    for bad in ("nowhere@1", "step@x", "step@1:HUP"):
        with pytest.raises(ConfigError, match="STREAMTRAIN_FAULT"):
            FaultPlan.from_env({"STREAMTRAIN_FAULT": bad})
