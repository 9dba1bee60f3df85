"""trainer.data.storage against a real gcp-storage-emulator (and the FaultProxy), local paths."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from google.api_core import exceptions as api_exceptions

from trainer.data.counters import Counters
from trainer.data.gcs import GcsConnection
from trainer.data.storage import Storage, is_gcs, join
from trainer.errors import (
    ExitCode,
    StorageNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
)

MEDIA = "alt=media"  # object downloads; listing and metadata stay unfaulted


def _blob_bytes(seed: int, size: int = 64 * 1024) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def objects(gcs_bucket, gcs_admin):
    """Five 64 KiB random objects under gs://bucket/obj/; returns {uri: bytes}."""
    bucket = gcs_admin.bucket(gcs_bucket)
    out = {}
    for i in range(5):
        data = _blob_bytes(i)
        bucket.blob(f"obj/{i}.bin").upload_from_string(data)
        out[f"gs://{gcs_bucket}/obj/{i}.bin"] = data
    return out


def test_is_gcs_and_join():
    assert is_gcs("gs://b/x") and not is_gcs("/data/x") and not is_gcs("gsx://b")
    assert join("gs://b", "a", "b.jpg") == "gs://b/a/b.jpg"
    assert join("gs://b/p/", "/a/", "b.jpg") == "gs://b/p/a/b.jpg"
    assert join("gs://b/p") == "gs://b/p"
    assert join("/data", "a", "b.jpg") == os.path.join("/data", "a", "b.jpg")


def test_list_recursive_filtered_sorted_paginated(
    gcs_bucket, gcs_upload_tree, fault_proxy, tmp_path
):
    names = [f"cls{i % 3}/sub/img{i:02d}.{('jpg', 'PNG', 'txt')[i % 3]}" for i in range(25)]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    gcs_upload_tree(str(tmp_path), f"gs://{gcs_bucket}/data")
    # A sibling prefix that shares the leading characters must not be listed.
    gcs_upload_tree(str(tmp_path / "cls0"), f"gs://{gcs_bucket}/data2")
    proxy = fault_proxy(set_env=True)  # no faults: it only counts the listing requests

    storage = Storage(list_page_size=4)
    listed = storage.list(f"gs://{gcs_bucket}/data")
    assert listed == sorted(f"gs://{gcs_bucket}/data/{n}" for n in names)
    # The page size reaches the server. (gcp-storage-emulator ignores maxResults/pageToken and
    # returns everything in one page, so following nextPageToken is the library's job here.)
    listing = [r for r in proxy.recent_requests() if f"/b/{gcs_bucket}/o?" in r]
    assert listing and all("maxResults=4" in r for r in listing)

    images = storage.list(f"gs://{gcs_bucket}/data/", extensions=(".jpg", ".png"))
    assert images == sorted(f"gs://{gcs_bucket}/data/{n}" for n in names if not n.endswith(".txt"))
    assert len(images) == 17
    assert storage.list(f"gs://{gcs_bucket}/nothing-here") == []


def test_read_write_exists_delete_gcs(gcs_bucket):
    counters = Counters()
    storage = Storage(counters=counters)
    uri = f"gs://{gcs_bucket}/runs/1/metrics.json"
    assert not storage.exists(uri)
    storage.write(uri, b'{"acc": 1}')
    assert storage.exists(uri)
    assert storage.exists(f"gs://{gcs_bucket}/runs/1")  # a non-empty prefix exists too
    assert storage.read(uri) == b'{"acc": 1}'
    assert counters.get("objects_fetched") == 1
    assert counters.get("bytes_fetched") == 10
    assert counters.get("fetch_seconds") > 0
    storage.write(uri, b"v2")  # overwrite
    assert storage.read(uri) == b"v2"
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # missing is fine


def test_upload_and_download_dir_gcs(gcs_bucket, tmp_path):
    src = tmp_path / "model"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb" * 1000)
    (src / "variables" / "variables.data-00000-of-00001").write_bytes(_blob_bytes(7))
    (src / "variables" / "variables.index").write_bytes(b"idx")
    storage = Storage(concurrency=4)
    uri = f"gs://{gcs_bucket}/export/model"
    storage.upload_dir(str(src), uri)
    assert storage.list(uri) == [
        f"{uri}/saved_model.pb",
        f"{uri}/variables/variables.data-00000-of-00001",
        f"{uri}/variables/variables.index",
    ]
    dst = tmp_path / "copy"
    storage.download_dir(uri, str(dst))
    for path in src.rglob("*"):
        if path.is_file():
            assert (dst / path.relative_to(src)).read_bytes() == path.read_bytes()


def test_local_paths_behave_the_same(tmp_path):
    counters = Counters()
    storage = Storage(counters=counters)
    root = tmp_path / "data"
    storage.write(str(root / "b" / "2.PNG"), b"png")  # parents are created
    storage.write(str(root / "a" / "1.jpg"), b"jpeg")
    storage.write(str(root / "a" / "notes.txt"), b"txt")
    assert storage.list(str(root), extensions=(".jpg", ".png")) == [
        str(root / "a" / "1.jpg"),
        str(root / "b" / "2.PNG"),
    ]
    assert storage.read(str(root / "a" / "1.jpg")) == b"jpeg"
    assert counters.get("objects_fetched") == 1 and counters.get("bytes_fetched") == 4
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]  # no temp files left behind
    assert storage.exists(str(root / "a" / "1.jpg"))
    storage.delete(str(root / "a" / "1.jpg"))
    storage.delete(str(root / "a" / "1.jpg"))
    assert not storage.exists(str(root / "a" / "1.jpg"))

    storage.upload_dir(str(root), str(tmp_path / "out" / "model"))
    (tmp_path / "out" / "model" / "theirs.txt").write_bytes(b"kept")
    storage.write(str(root / "b" / "2.PNG"), b"png2")
    storage.upload_dir(str(root), str(tmp_path / "out" / "model"))  # into an existing tree
    assert (tmp_path / "out" / "model" / "theirs.txt").read_bytes() == b"kept"
    assert (tmp_path / "out" / "model" / "b" / "2.PNG").read_bytes() == b"png2"
    storage.download_dir(str(tmp_path / "out" / "model"), str(tmp_path / "back"))
    assert (tmp_path / "back" / "b" / "2.PNG").read_bytes() == b"png2"
    storage.check_writable(str(tmp_path / "new" / "dir"))
    assert os.listdir(tmp_path / "new" / "dir") == []

    with pytest.raises(StorageNotFoundError, match="missing"):
        storage.read(str(tmp_path / "missing.jpg"))
    with pytest.raises(StorageNotFoundError, match="nowhere"):
        storage.list(str(tmp_path / "nowhere"))


def test_local_writes_get_the_umask_modes_not_the_temporary_names(tmp_path):
    from trainer.data.localfs import process_umask

    old = os.umask(0o027)
    process_umask.cache_clear()
    try:
        assert process_umask() == 0o027
        storage = Storage()
        storage.write(str(tmp_path / "a" / "model.keras"), b"m")
        (tmp_path / "src" / "variables").mkdir(parents=True)
        (tmp_path / "src" / "variables" / "v.index").write_bytes(b"v")
        os.chmod(tmp_path / "src", 0o700)  # like a mkdtemp folder
        storage.upload_dir(str(tmp_path / "src"), str(tmp_path / "a" / "saved_model" / "1"))
    finally:
        os.umask(old)
        process_umask.cache_clear()
    mode = lambda p: oct(os.stat(tmp_path / "a" / p).st_mode & 0o777)  # noqa: E731
    assert mode("model.keras") == "0o640" and mode("saved_model/1") == "0o750"
    assert mode("saved_model/1/variables") == "0o750"
    assert mode("saved_model/1/variables/v.index") == "0o640"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_local_permission_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StoragePermissionError, match="locked"):
        Storage().check_writable(str(locked))


def test_missing_bucket_and_object(gcs_env, gcs_bucket):
    storage = Storage()
    with pytest.raises(StorageNotFoundError, match="no-such-bucket-x1") as err:
        storage.list("gs://no-such-bucket-x1/images")
    assert err.value.exit_code == ExitCode.BAD_INPUT
    with pytest.raises(StorageNotFoundError, match="no-such-bucket-x1"):
        storage.check_writable("gs://no-such-bucket-x1/out")
    with pytest.raises(StorageNotFoundError, match=f"gs://{gcs_bucket}/nope.jpg"):
        storage.read(f"gs://{gcs_bucket}/nope.jpg")
    assert not storage.exists("gs://no-such-bucket-x1/a")
    storage.check_writable(f"gs://{gcs_bucket}/out")
    assert storage.list(f"gs://{gcs_bucket}/out") == []  # the probe was deleted


def test_permission_errors_name_bucket_and_permission(gcs_env):
    # The emulator does not enforce IAM, so map the library's 403 exception directly.
    err = GcsConnection().translate(
        api_exceptions.Forbidden("caller does not have storage.objects.get access"),
        "gs://secret-bucket/a.jpg",
        "read the object",
        "storage.objects.get (roles/storage.objectViewer)",
    )
    assert isinstance(err, StoragePermissionError)
    assert "secret-bucket" in str(err) and "storage.objects.get" in str(err)
    assert "Workload Identity" in str(err)


@pytest.mark.parametrize("kind", ["status_503", "status_429", "reset", "truncate"])
def test_transient_faults_are_retried(kind, objects, fault_proxy):
    proxy = fault_proxy(set_env=True, only_paths=MEDIA, max_faults=3, **{kind: 1.0})
    counters = Counters()
    storage = Storage(counters=counters, deadline_s=20, request_timeout_s=5)
    for uri, data in objects.items():
        assert storage.read(uri) == data  # exact bytes, never a short body
    assert proxy.stats()[kind] == 3
    assert counters.get("retries") >= 3
    assert counters.get("objects_fetched") == len(objects)
    assert counters.get("bytes_fetched") == sum(len(d) for d in objects.values())


def test_close_delimited_truncation_is_caught_by_checksum(objects, fault_proxy, gcs_emulator):
    # Without a Content-Length only the checksum reveals a short body; the emulator sends the
    # x-goog-hash header that download_as_bytes(checksum="auto") verifies.
    uri = next(iter(objects))
    media_url = f"{gcs_emulator}/download/storage/v1/b/{uri[5:].replace('/', '/o/', 1)}"
    assert "crc32c=" in requests.get(f"{media_url}?alt=media", timeout=5).headers["x-goog-hash"]
    proxy = fault_proxy(
        set_env=True, only_paths=MEDIA, max_faults=3, truncate=1.0, truncate_length=False
    )
    counters = Counters()
    storage = Storage(counters=counters, deadline_s=20, request_timeout_s=5)
    for uri, data in objects.items():
        assert storage.read(uri) == data
    assert proxy.stats()["truncate"] == 3
    assert counters.get("retries") >= 3


def test_mixed_random_faults_under_concurrency(objects, fault_proxy):
    proxy = fault_proxy(
        set_env=True,
        only_paths=MEDIA,
        seed=3,
        status_503=0.1,
        status_429=0.1,
        reset=0.1,
        truncate=0.1,
    )
    counters = Counters()
    storage = Storage(counters=counters, concurrency=8, deadline_s=30, request_timeout_s=5)
    uris = list(objects) * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(storage.read, uris))
    assert results == [objects[u] for u in uris]
    injected = sum(proxy.stats()[k] for k in ("status_503", "status_429", "reset", "truncate"))
    assert injected > 0
    assert counters.get("retries") >= injected


def test_stall_past_request_timeout_is_retried(objects, fault_proxy):
    proxy = fault_proxy(set_env=True, only_paths=MEDIA, stall=1.0, stall_s=10, max_faults=1)
    counters = Counters()
    storage = Storage(counters=counters, deadline_s=10, request_timeout_s=0.5)
    uri, data = next(iter(objects.items()))
    assert storage.read(uri) == data
    assert proxy.stats()["stall"] == 1
    assert counters.get("retries") >= 1


def test_permanent_503_ends_in_storage_unavailable(objects, fault_proxy):
    fault_proxy(set_env=True, only_paths=MEDIA, status_503=1.0)
    counters = Counters()
    storage = Storage(counters=counters, deadline_s=2, request_timeout_s=1)
    uri = next(iter(objects))
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as err:
        storage.read(uri)
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert uri in message and "503" in message and "retry later" in message
    assert err.value.exit_code == ExitCode.STORAGE_UNAVAILABLE
    assert counters.get("retries") >= 1
    # Bounded by the deadline (plus at most one request timeout), not the library's 120 s.
    assert elapsed < 2 + 1 + 2


def _read_all_at_once(storage: Storage, uris: list[str]) -> list[bytes]:
    barrier = threading.Barrier(len(uris))

    def read(uri: str) -> bytes:
        barrier.wait()
        return storage.read(uri)

    with ThreadPoolExecutor(len(uris)) as pool:
        return list(pool.map(read, uris))


def test_pool_sized_to_concurrency(objects, fault_proxy, caplog):
    # Latency keeps all 32 requests in flight at once, so 32 connections are open together.
    fault_proxy(set_env=True, latency_ms=100)
    uris = [u for u in objects for _ in range(7)][:32]
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")

    results = _read_all_at_once(Storage(concurrency=32), uris)
    assert results == [objects[u] for u in uris]
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]

    # Control: with a pool smaller than the thread count the warning does appear, so the
    # assertion above can fail.
    caplog.clear()
    _read_all_at_once(Storage(concurrency=8), uris)
    assert [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
