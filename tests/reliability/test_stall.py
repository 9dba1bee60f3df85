"""Stalls: a read or a step that hangs ends the run with exit 7 naming where, and a restart
resumes from the last checkpoint. The hang is a hook that blocks one thread for good."""

from __future__ import annotations

import re

import pytest
from support.trainer_runs import run

from trainer.dev.synthetic import write_learnable_dataset

AREA = "Stalls"
ARGS = (
    "--epochs", "2", "--batch-size", "4", "--image-size", "16", "--model", "linear",
    "--val-split", "0.25", "--checkpoint-every", "2", "--log-every", "2",
    "--stall-timeout-s", "4",
)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stall-data")
    write_learnable_dataset(str(root), classes=2, per_class=12, min_size=16, max_size=32, seed=4)
    return root


@pytest.mark.parametrize(
    ("fault", "case", "said"),
    [
        ("input@7:FREEZE", "the input pipeline hangs", "stuck waiting for input"),
        ("step@5:FREEZE", "a step hangs", "stuck in the step (computing on the device)"),
    ],
)
def test_a_hang_exits_7_naming_where_and_the_restart_resumes(
    data, tmp_path, row, fault, case, said
):
    out = tmp_path / "out"
    stalled = run(
        "--data", str(data), "--output", str(out), *ARGS, env={"STREAMTRAIN_FAULT": fault}
    )
    assert stalled.code == 7, stalled.log[-3000:]
    last = stalled.log.strip().splitlines()[-1]
    assert last.startswith("error: stalled: nothing finished for "), last
    assert said in last and "restart the job, it resumes" in last
    assert "Traceback" not in stalled.log
    resumed = run("--data", str(data), "--output", str(out), *ARGS)
    assert resumed.code == 0, resumed.log[-3000:]
    at = re.search(r"resumed from checkpoint at step (\d+)", resumed.log)
    assert at and int(at.group(1)) >= 2, resumed.log[-2000:]
    row(
        area=AREA,
        case=case,
        injected=f"STREAMTRAIN_FAULT={fault}; --stall-timeout-s 4",
        observed=f"exit 7 after {stalled.seconds:.0f} s: {last[:230]}; the restart resumed at "
        f"step {at.group(1)} and ended 0",
    )
