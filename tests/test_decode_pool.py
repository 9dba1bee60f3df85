"""DecodePool: worker processes decode exactly as decode_image does, into shared memory that
nothing outlives: not a killed worker, not a crashing image, not a trainer killed by SIGKILL."""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import crashing_decoder

from trainer.data.decode import ImageDecodeError, decode_image
from trainer.data.decode_pool import DecodePool, FileRange

SIZE = (24, 32)
CRASHER = [sys.executable, crashing_decoder.__file__]


def _image(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (90, 60)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def _holders(name: str = "streamtrain-decode") -> list[int]:
    """Processes that still map or hold the pool's memfd."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            maps = (proc / "maps").read_text()
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        if name in maps or any(name in _link(fd) for fd in fds):
            pids.append(int(proc.name))
    return pids


def _link(fd: Path) -> str:
    # A process still starting opens and closes files while we look: a gone fd is not ours.
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_pixels_equal_the_in_process_decoder(dtype, resize):
    blobs = [_image(0), _image(1, "PNG"), _image(2, size=(40, 200))]
    with DecodePool(2, size=SIZE, dtype=dtype, resize=resize) as pool:
        for blob in blobs:
            want = decode_image(blob, size=SIZE, dtype=dtype, resize=resize)
            got = pool.decode(blob)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_file_ranges_fill_the_rows_given_and_report_failures_by_item(tmp_path):
    import google_crc32c

    blobs = [_image(s) for s in range(5)]
    shard = tmp_path / "shard.bin"
    shard.write_bytes(b"".join(blobs))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    items = [
        FileRange(str(shard), int(o), len(b), google_crc32c.value(b))
        for o, b in zip(offsets, blobs, strict=False)
    ]
    items[1] = FileRange(str(shard), int(offsets[1]), len(blobs[1]), crc32c=7)  # wrong crc
    items[3] = b"<html>not found</html>"
    items.append(FileRange(str(shard), int(offsets[-1]) - 10, 100))  # runs past the end
    out = np.zeros((12, *SIZE, 3), np.uint8)
    rows = [11, 9, 7, 5, 3, 1]
    with DecodePool(2, size=SIZE, rows=4) as pool:  # 6 items: two requests
        errors = pool.run(items, out, rows)
    assert {k: e.reason for k, e in errors.items()} == {
        1: "corrupt",
        3: "not_an_image",
        5: "truncated",
    }
    assert "crc32c mismatch" in str(errors[1])
    for k in (0, 2, 4):
        assert np.array_equal(out[rows[k]], decode_image(blobs[k], size=SIZE))
    assert not out[[0, 2, 4, 6, 8, 10, 9, 5, 1]].any(), "failed items and other rows untouched"


def test_a_killed_worker_is_restarted_and_its_images_retried():
    blob = _image(3)
    want = decode_image(blob, size=SIZE)
    with DecodePool(1, size=SIZE) as pool:
        first = pool.pids[0]
        os.kill(first, signal.SIGKILL)
        assert np.array_equal(pool.decode(blob), want)
        assert pool.restarts == 1 and pool.pids[0] != first
        assert pool.counters.get("decoder_restarts") == 1


def test_an_image_that_crashes_the_decoder_is_reported_and_the_rest_decode():
    blobs = [_image(4), b"CRASH and burn", _image(5)]
    out = np.zeros((3, *SIZE, 3), np.uint8)
    with DecodePool(2, size=SIZE, command=CRASHER) as pool:
        errors = pool.run(blobs, out, [0, 1, 2])
        assert list(errors) == [1] and errors[1].reason == "crashed"
        assert "SIGSEGV" in str(errors[1])
        assert np.array_equal(out[0], decode_image(blobs[0], size=SIZE))
        assert np.array_equal(out[2], decode_image(blobs[2], size=SIZE))
        with pytest.raises(ImageDecodeError, match="died on it"):
            pool.decode(b"CRASH again")
        assert np.array_equal(pool.decode(blobs[2]), out[2]), "the pool still works"


def test_a_crash_blames_only_its_image_while_the_other_lane_is_busy():
    # One process, two lanes: the requests in flight beside the crashing one die with it, are
    # retried alone, and decode; only the image that kills a fresh worker twice is reported.
    blobs = [_image(10 + k) for k in range(12)]
    blobs[7] = b"CRASH in the middle"
    out = np.zeros((12, *SIZE, 3), np.uint8)
    with DecodePool(1, size=SIZE, rows=2, command=CRASHER) as pool:
        with concurrent.futures.ThreadPoolExecutor(6) as threads:
            parts = [
                threads.submit(pool.run, blobs[s : s + 2], out, [s, s + 1]) for s in range(0, 12, 2)
            ]
            errors = {
                s + k: e
                for s, part in zip(range(0, 12, 2), parts, strict=True)
                for k, e in part.result().items()
            }
        assert list(errors) == [7] and errors[7].reason == "crashed"
        assert pool.restarts >= 2
    for k, blob in enumerate(blobs):
        if k != 7:
            assert np.array_equal(out[k], decode_image(blob, size=SIZE)), k


def test_nothing_outlives_a_trainer_killed_with_sigkill():
    script = textwrap.dedent(
        """
        import sys, time
        from trainer.data.decode_pool import DecodePool
        pool = DecodePool(2, size=(24, 32))
        print(*pool.pids, flush=True)
        time.sleep(600)
        """
    )
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        assert set(_holders()) >= {proc.pid, *workers}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert _gone(workers), "the decode workers exit when the trainer is gone"
    assert not set(_holders()) & {proc.pid, *workers}, "no one maps the shared memory"
    assert set(os.listdir("/dev/shm")) <= shm_before, "nothing named was left in /dev/shm"


def test_close_stops_the_workers_and_a_closed_pool_refuses_work():
    pool = DecodePool(2, size=SIZE)
    workers = pool.pids
    pool.close()
    assert _gone(workers, timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        pool.decode(_image(6))


def _batches(index, storage, **options):
    from trainer.data.sequence import ImageSequence

    with ImageSequence(
        index, batch_size=6, image_size=SIZE, storage=storage, seed=5, remainder="pad", **options
    ) as seq:
        batches = [seq.get_batch(epoch=e, index=i) for e in (0, 1) for i in range(len(seq))]
        return batches, sorted(r["uri"] for r in seq.quarantined)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_image_sequence_batches_equal_the_threads_with_bad_and_vanished_files(
    tmp_path, where, gcs_bucket, gcs_upload_tree
):
    from trainer.data.index import discover
    from trainer.data.storage import Storage
    from trainer.dev.synthetic import write_learnable_dataset

    root = tmp_path / "data"
    first, second = write_learnable_dataset(
        str(root), classes=2, per_class=10, min_size=20, max_size=64, seed=3
    )
    (root / first / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / second / "zz_gone.jpg").write_bytes(_image(9))
    storage = Storage()
    uri = str(root)
    if where == "gcs":
        gcs_upload_tree(str(root), f"gs://{gcs_bucket}/seq")
        uri = f"gs://{gcs_bucket}/seq"
    index = discover(uri, storage=storage)
    storage.delete(f"{uri}/{second}/zz_gone.jpg")  # listed, then removed
    want, want_bad = _batches(index, storage)
    with DecodePool(2, size=SIZE, rows=4) as pool:
        got, got_bad = _batches(index, storage, decoders=pool)
    assert want_bad == got_bad == [f"{uri}/{first}/zz_broken.jpg", f"{uri}/{second}/zz_gone.jpg"]
    assert len(got) == len(want) == 8
    for (xa, ya), (xb, yb) in zip(want, got, strict=True):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)


def test_urgent_requests_go_before_those_already_waiting():
    blob = _image(5)
    want = decode_image(blob, size=SIZE)
    done: list[str] = []
    with DecodePool(1, size=SIZE, lanes=1, command=CRASHER) as pool:

        def decode(name: str, data: bytes, urgent: bool = False) -> None:
            out = np.empty((1, *SIZE, 3), np.uint8)
            errors = pool.run([data], out, rows=[0], urgent=urgent)
            done.append(name)  # first: the order the pool answered in
            assert errors == {} and np.array_equal(out[0], want)

        with concurrent.futures.ThreadPoolExecutor(8) as threads:
            busy = threads.submit(decode, "busy", b"SLOW" + blob)  # holds the only lane
            time.sleep(0.3)
            waiting = [threads.submit(decode, f"train{k}", blob) for k in range(6)]
            time.sleep(0.3)  # all six wait for the lane now
            urgent = threads.submit(decode, "eval", blob, True)
            for future in [busy, *waiting, urgent]:
                future.result(timeout=30)
    # "busy" may be recorded just after "eval": its thread returns as the lane is handed on.
    assert done.index("eval") < min(done.index(f"train{k}") for k in range(6)), done
