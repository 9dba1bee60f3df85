"""Mixed precision on 2 CPU replicas: an overflow on one replica is skipped by both alike.

`overflow@N` (tests/support/faults.py) makes replica 1's loss non-finite at step N. Keras's
LossScaleOptimizer would take replica 0's "finite" answer and add replica 1's inf gradient to
the weights; the trainer all-reduces that decision, so the step is skipped on every replica.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.trainer_runs import run

from trainer.dev.synthetic import write_learnable_dataset

COMMON = ("--image-size", "32", "--model", "small_cnn", "--cpu-replicas", "2",
          "--batch-size", "8", "--log-every", "100", "--epochs", "2")  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("shapes")
    write_learnable_dataset(str(root), classes=3, per_class=16, min_size=32, max_size=48, seed=5)
    return str(root)


def weights_of(out) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(out / "model.keras", compile=False).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["fp16", "bf16"])
def test_an_overflow_on_one_replica_is_skipped_on_both(shapes, tmp_path, policy):
    out = tmp_path / policy
    result = run("--data", shapes, "--output", str(out), "--mixed-precision", policy, *COMMON,
                 env={"STREAMTRAIN_FAULT": "overflow@2"})  # fmt: skip
    assert result.code == 0, result.log[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dtype_policy"] == {"fp16": "mixed_float16", "bf16": "mixed_bfloat16"}[policy]
    assert metrics["replicas_in_sync"] is True
    assert all(np.isfinite(w).all() for w in weights_of(out))
    assert np.isfinite(metrics["history"][-1]["loss"])


@pytest.mark.slow
def test_resuming_under_another_policy_keeps_the_weights_and_restarts_the_optimizer(
    shapes, tmp_path
):
    out = str(tmp_path / "out")
    fault = {"STREAMTRAIN_FAULT": "step@3"}  # the vote stops both replicas after step 4
    stopped = run("--data", shapes, "--output", out, "--mixed-precision", "fp16",
                  "--checkpoint-every", "1", *COMMON, env=fault)  # fmt: skip
    assert stopped.code == 143, stopped.log[-3000:]
    resumed = run("--data", shapes, "--output", out, "--mixed-precision", "off", *COMMON)
    assert resumed.code == 0, resumed.log[-3000:]
    assert resumed.lines("trained under dtype policy mixed_float16, this run uses float32")
    assert resumed.lines("resumed from checkpoint at step 4")
