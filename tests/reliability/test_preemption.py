"""Preemption: SIGTERM at many points, SIGKILL; every restarted run ends where the
uninterrupted one does: the same samples in the same order, the same final weights."""

from __future__ import annotations

import re
import uuid

import pytest
from support.trainer_runs import metrics, run, run_until_done, tagged_processes

from trainer.dev.synthetic import write_learnable_dataset

AREA = "Preemption"
STEPS_PER_EPOCH = 9  # 36 training objects, global batch 4
ARGS = (
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--cpu-replicas",
    "2",
    "--image-size",
    "24",
    "--val-split",
    "0.25",
    "--trace-steps",
    "--deterministic",
    "--checkpoint-every",
    "4",
    "--log-every",
    "3",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("preempt-data")
    write_learnable_dataset(str(root), classes=3, per_class=16, min_size=24, max_size=64, seed=9)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = run("--data", str(data), "--output", str(out), *ARGS)
    assert done.code == 0, done.log[-3000:]
    return metrics(out)


TERM_CASES = [
    pytest.param("step@1", "SIGTERM after the first step", marks=pytest.mark.full),
    pytest.param("step@5", "SIGTERM in the middle of epoch 1"),
    pytest.param("step@9", "SIGTERM on the last step of epoch 1", marks=pytest.mark.full),
    pytest.param("eval@1", "SIGTERM during evaluation", marks=pytest.mark.full),
    pytest.param("epoch_end@1", "SIGTERM right after an epoch ends", marks=pytest.mark.full),
    pytest.param("checkpoint_write@2", "SIGTERM during a checkpoint write", marks=pytest.mark.full),
    pytest.param("step@13", "SIGTERM in the middle of epoch 2", marks=pytest.mark.full),
    pytest.param("step@18", "SIGTERM on the very last step", marks=pytest.mark.full),
    pytest.param("export@1", "SIGTERM during the model export", marks=pytest.mark.full),
    pytest.param(
        "step@3,step@4", "SIGTERM twice (the restart is preempted too)", marks=pytest.mark.full
    ),
]


def _check_same_as_reference(out, reference):
    final = metrics(out)
    assert [s for s, _ in final["trace"]] == list(range(2 * STEPS_PER_EPOCH))
    assert final["trace"] == reference["trace"], "samples or order differ"
    assert final["weights_sha256"] == reference["weights_sha256"], "final weights differ"
    assert (out / "_SUCCESS").exists()
    return final


@pytest.mark.parametrize(("fault", "case"), TERM_CASES)
def test_sigterm_then_restart_matches_the_uninterrupted_run(
    data, reference, tmp_path, row, fault, case
):
    out = tmp_path / "out"
    args = ("--data", str(data), "--output", str(out), *ARGS)
    # "a,b": the first run is preempted at a, its restart at b; later restarts run clean.
    *earlier, last = fault.split(",")
    runs = [run(*args, env={"STREAMTRAIN_FAULT": f}) for f in earlier]
    runs += run_until_done(*args, first_env={"STREAMTRAIN_FAULT": last})
    codes = [r.code for r in runs]
    assert codes[-1] == 0, runs[-1].log[-3000:]
    assert all(c in (0, 143) for c in codes), codes
    for r in runs:
        if r.code == 143:
            assert r.lines(r"SIGTERM received") and r.lines(r"checkpoint .* written")
            assert re.search(r"^error: stopped by SIGTERM at step \d+", r.log, re.M)
    resumed = [
        m.group(1)
        for r in runs[1:]
        for m in re.finditer(r"resumed from checkpoint at step (\d+)", r.log)
    ]
    _check_same_as_reference(out, reference)
    row(
        area=AREA,
        case=case,
        injected=f"STREAMTRAIN_FAULT={fault}",
        observed=f"exit codes {' → '.join(map(str, codes))}; resumed at step(s) "
        f"{', '.join(resumed) or '-'}; sample order and final weights equal the "
        "uninterrupted run's",
    )


KILL_CASES = [
    pytest.param("checkpoint_write@2:KILL", "SIGKILL during a checkpoint write"),
    pytest.param("step@7:KILL", "SIGKILL in the middle of an epoch", marks=pytest.mark.full),
]


@pytest.mark.parametrize(("fault", "case"), KILL_CASES)
def test_sigkill_resumes_from_the_last_complete_checkpoint(
    data, reference, tmp_path, row, fault, case
):
    out = tmp_path / "out"
    args = ("--data", str(data), "--output", str(out), *ARGS)
    tag = f"sigkill-{uuid.uuid4().hex}"
    killed = run(*args, env={"STREAMTRAIN_FAULT": fault, "TEST_TAG": tag})
    assert killed.code == -9, killed.log[-2000:]
    # Its decode processes see their socket close and exit; nothing else maps their memory.
    assert "decoding in 2 decode processes" in killed.log
    assert tagged_processes(tag, wait=10) == [], "decode processes outlived the trainer"
    folders = sorted((out / "checkpoints").iterdir())
    partial = [f.name for f in folders if not (f / "COMMITTED").exists()]
    complete = [f.name for f in folders if (f / "COMMITTED").exists()]
    last_logged = (
        max(int(m) for m in re.findall(r"step (\d+)/", killed.log))
        if re.search(r"step (\d+)/", killed.log)
        else 0
    )
    restarted = run(*args)
    assert restarted.code == 0, restarted.log[-3000:]
    step = int(re.search(r"resumed from checkpoint at step (\d+)", restarted.log).group(1))
    assert f"ckpt-{step:09d}" in complete, "resumed from a complete checkpoint"
    assert f"ckpt-{step:09d}" not in partial
    # The step the kill hit: the half-written checkpoint's, or the fault's step number.
    killed_at = (
        int(partial[-1].split("-")[1]) if partial else int(fault.split("@")[1].split(":")[0])
    )
    assert killed_at - step <= 4, "lost at most one checkpoint interval (4 steps)"
    _check_same_as_reference(out, reference)
    row(
        area=AREA,
        case=case,
        injected=f"STREAMTRAIN_FAULT={fault} (checkpoint every 4 steps)",
        observed=f"killed (exit -9) with partial checkpoint(s) {partial or 'none'}; its 2 "
        "decode processes gone within 10 s (no shared memory left: a memfd); restart "
        f"resumed from complete ckpt at step {step} (last step logged before the kill: "
        f"{last_logged}); final order and weights equal the uninterrupted run's",
    )
