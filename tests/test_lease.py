"""The output lease (trainer/train/lease.py): a lock file locally, a generation-matched object
on gs:// (through tests/support/preconditions.py: the emulator ignores ifGenerationMatch)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from support.preconditions import GenerationMatchProxy

from trainer.data.storage import Storage
from trainer.dev.emulator import EMULATOR_ENV
from trainer.errors import ConfigError, ExitCode
from trainer.train.lease import LEASE, OutputLease

HOLD = """
import sys, time
from trainer.data.storage import Storage
from trainer.train.lease import OutputLease
lease = OutputLease(sys.argv[1], storage=Storage(), job_name=sys.argv[2] or None)
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_in_subprocess(output: str, job: str = "") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, output, job], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_local_trainer_is_refused_naming_the_holder(tmp_path):
    out = str(tmp_path / "out")
    first = OutputLease(out, storage=Storage(), job_name="train-a")
    first.acquire()
    with pytest.raises(ConfigError) as refused:
        OutputLease(out, storage=Storage()).acquire()
    message = str(refused.value)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert f"--output {out}: another trainer is writing there" in message
    for part in ("job train-a", f"host {first.holder['host']}", f"pid {first.holder['pid']}"):
        assert part in message
    first.release()
    OutputLease(out, storage=Storage()).acquire()  # free again


def test_a_killed_local_holder_never_blocks_its_restart(tmp_path):
    out = str(tmp_path / "out")
    holder = hold_in_subprocess(out)
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        OutputLease(out, storage=Storage()).acquire()
    holder.kill()
    holder.wait()
    lease = OutputLease(out, storage=Storage())
    lease.acquire()  # the kernel dropped the lock with the process
    assert json.loads((tmp_path / "out" / LEASE).read_text())["pid"] == lease.holder["pid"]
    lease.release()


@pytest.fixture
def lease_bucket(gcs_bucket, gcs_emulator, monkeypatch):
    with GenerationMatchProxy(gcs_emulator) as proxy:
        monkeypatch.setenv(EMULATOR_ENV, proxy.url)
        yield gcs_bucket, proxy


def test_the_emulator_alone_ignores_generation_preconditions(gcs_bucket, gcs_admin):
    # Why the proxy: without it a create-if-absent overwrites.
    storage = Storage()
    uri = f"gs://{gcs_bucket}/x"
    assert storage.write_if_generation(uri, b"1", generation=0) is not None
    assert storage.write_if_generation(uri, b"2", generation=0) is not None


def test_gcs_lease_refuses_another_job_and_is_released(lease_bucket):
    bucket, proxy = lease_bucket
    out = f"gs://{bucket}/runs/1"
    storage = Storage()
    first = OutputLease(out, storage=storage, job_name="train-a")
    first.acquire()
    _, holder, _ = storage.stat_generation(f"{out}/{LEASE}")
    assert holder["job"] == "train-a" and holder["token"] == first.holder["token"]
    with pytest.raises(ConfigError) as refused:
        OutputLease(out, storage=Storage(), job_name="train-b").acquire()
    assert "job train-a" in str(refused.value) and "stale after 90s" in str(refused.value)
    assert proxy.precondition_failures >= 1
    first.release()
    assert storage.stat_generation(f"{out}/{LEASE}") is None
    second = OutputLease(out, storage=storage, job_name="train-b")
    second.acquire()
    second.release()


def test_gcs_lease_is_renewed_and_a_stale_one_taken_over(lease_bucket, caplog):
    bucket, _ = lease_bucket
    out = f"gs://{bucket}/runs/2"
    storage = Storage()
    first = OutputLease(out, storage=storage, renew_s=0.2, ttl_s=60)
    first.acquire()
    before = storage.stat_generation(f"{out}/{LEASE}")[0]
    time.sleep(1.0)
    assert storage.stat_generation(f"{out}/{LEASE}")[0] != before, "not renewed"
    first._stop.set()  # stops renewing, like a pod frozen or gone
    first._thread.join()
    time.sleep(0.5)
    caplog.set_level(logging.INFO, logger="trainer.train.lease")
    late = OutputLease(out, storage=Storage(), job_name="other", ttl_s=0.3)
    late.acquire()
    assert "(stale)" in caplog.text
    # The old holder's release no longer removes the new holder's lease.
    first.release()
    assert storage.stat_generation(f"{out}/{LEASE}")[1]["token"] == late.holder["token"]
    late.release()


def test_gcs_lease_the_same_job_takes_over_at_once(lease_bucket, caplog):
    bucket, _ = lease_bucket
    out = f"gs://{bucket}/runs/3"
    previous = OutputLease(out, storage=Storage(), job_name="train-a", renew_s=60)
    previous.holder["host"] = "train-a-0-abcde"  # the preempted pod
    previous.acquire()
    caplog.set_level(logging.INFO, logger="trainer.train.lease")
    restarted = OutputLease(out, storage=Storage(), job_name="train-a")
    restarted.acquire()
    assert "(same job)" in caplog.text
    restarted.release()
    previous._generation = None  # its process is gone: nothing to release
    previous.release()


def test_gcs_lease_of_a_dead_local_process_is_taken_over(lease_bucket, caplog):
    bucket, _ = lease_bucket
    out = f"gs://{bucket}/runs/4"
    gone = subprocess.Popen(["true"])
    gone.wait()
    previous = OutputLease(out, storage=Storage(), renew_s=60)
    previous.holder["pid"] = str(gone.pid)
    previous.acquire()
    caplog.set_level(logging.INFO, logger="trainer.train.lease")
    restarted = OutputLease(out, storage=Storage())
    restarted.acquire()
    assert "(its process is gone)" in caplog.text
    restarted.release()
    previous._generation = None
    previous.release()
