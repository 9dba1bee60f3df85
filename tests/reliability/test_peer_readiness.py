"""Multi-worker starts: a peer that never becomes reachable is named, within the bounded wait."""

from __future__ import annotations

import json
import subprocess
import time

from support.trainer_runs import command, environ

from trainer.dev.emulator import free_port
from trainer.dev.synthetic import write_learnable_dataset

AREA = "Multi-worker faults"


def run_worker_0(tmp_path, peer: str) -> tuple[subprocess.CompletedProcess, float]:
    workers = [f"127.0.0.1:{free_port()}", peer]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    data = tmp_path / "data"
    write_learnable_dataset(str(data), classes=2, per_class=4, min_size=16, max_size=24, seed=1)
    started = time.monotonic()
    proc = subprocess.run(
        command("--data", str(data), "--output", str(tmp_path / "out"), "--peer-wait-s", "3"),
        env=environ({"TF_CONFIG": json.dumps(tf_config)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc, time.monotonic() - started


def test_a_peer_whose_name_never_resolves(tmp_path, row):
    proc, seconds = run_worker_0(tmp_path, "train-abc-1.streamtrain-workers.invalid:2222")
    assert proc.returncode == 6, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker 0: peer worker 1 (train-abc-1."), last
    assert "its name does not resolve" in last and "Traceback" not in proc.stderr
    assert "peers: waiting for 1 of 1 worker(s)" in proc.stderr
    assert "devices:" not in proc.stderr  # the strategy never started
    row(
        area=AREA,
        case="a peer whose DNS name never resolves",
        injected="TF_CONFIG names worker 1 as train-abc-1.streamtrain-workers.invalid:2222; "
        "--peer-wait-s 3",
        observed=f"exit 6 after {seconds:.0f} s, before TensorFlow starts: {last[:200]}",
    )


def test_a_peer_that_refuses_connections(tmp_path, row):
    proc, seconds = run_worker_0(tmp_path, f"127.0.0.1:{free_port()}")
    assert proc.returncode == 6, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "peer worker 1 (127.0.0.1:" in last and "does not accept connections" in last, last
    row(
        area=AREA,
        case="a peer that resolves but never listens",
        injected="TF_CONFIG worker 1 on a loopback port nobody listens on; --peer-wait-s 3",
        observed=f"exit 6 after {seconds:.0f} s: {last[:200]}",
    )
