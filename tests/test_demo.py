"""`make demo`'s job: its outputs outlive the emulator in a local folder that the summary names
output by output, and --keep-running ends on SIGTERM as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from support.trainer_runs import environ


@pytest.mark.slow
def test_demo_copies_its_outputs_and_keep_running_ends_on_sigterm(tmp_path):
    local = tmp_path / "demo-output"
    demo = ["-m", "trainer.dev.demo", "--epochs", "1", "--output-dir", str(local)]
    proc = subprocess.Popen(
        [sys.executable, *demo, "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environ(),
        cwd=tmp_path,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("emulator left running"):
                break
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 10, "SIGTERM ended --keep-running"
    assert code in (0, 3), lines  # one epoch may miss the demo's 0.9 gate: exit 3
    summary = "\n".join(lines)
    assert f"copied from gs://streamtrain-demo/runs/demo/ to {local}/" in summary
    for name in ("model.keras", "labels.txt", "metrics.json", "confusion_matrix.png", "_SUCCESS"):
        assert (local / name).is_file(), name
        assert f"{local / name}" in summary, name
    assert any((local / "saved_model").glob("*/saved_model.pb"))
    missing = [line.split()[0] for line in lines if line.endswith(" MISSING")]
    assert missing == ([] if code == 0 else ["BLESSED"]), missing


def test_demo_refuses_an_output_dir_holding_files_it_did_not_write(tmp_path, caplog):
    from trainer.dev.demo import _foreign, main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--output-dir", str(tmp_path)]) == 2  # before the emulator starts
    assert f"--output-dir {tmp_path}: holds {tmp_path / 'notes.txt'}" in caplog.text
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "model.keras").write_text("a demo's, from before the marker")
    assert _foreign(str(tmp_path)) == ""


def test_only_a_marked_or_demo_shaped_output_dir_is_replaced(tmp_path):
    from trainer.dev.demo import MARKER, _foreign

    assert _foreign(str(tmp_path / "new")) == "" and _foreign(str(tmp_path)) == ""
    (tmp_path / "notes.txt").write_text("mine")
    assert _foreign(str(tmp_path)) == str(tmp_path / "notes.txt")
    (tmp_path / MARKER).write_text("")
    assert _foreign(str(tmp_path)) == ""
