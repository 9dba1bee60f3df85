"""scripts/gpu_check.py in its CPU smoke mode: the GPU check must not rot between GPU loans."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_reports_both_rates_and_the_trainer_run(tmp_path):
    proc = subprocess.run(
        [
            "timeout",
            "-k",
            "10",
            "300",
            sys.executable,
            "scripts/gpu_check.py",
            "--smoke",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["trainer_exit_code"] == 0 and report["trainer_replicas"] == 2
    assert report["synthetic_images_per_s"] > 0 and report["streamed_images_per_s"] > 0
    assert (tmp_path / "run" / "_SUCCESS").exists()
