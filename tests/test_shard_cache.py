"""ShardCache and Storage.download_file against the emulator through the FaultProxy: a shard is
read while it downloads, appears whole under its name, and a broken transfer resumes."""

from __future__ import annotations

import os
import random

from trainer.data.cache import MARKER
from trainer.data.counters import Counters
from trainer.data.ranges import read_range
from trainer.data.storage import Storage
from trainer.pack.shards import SHARDS_FOLDER, ShardCache

MEDIA = "alt=media"


def _shard(gcs_admin, bucket: str, size: int = 3 << 20) -> tuple[str, bytes]:
    data = random.Random(size).randbytes(size)
    gcs_admin.bucket(bucket).blob("packed/shard-00000.tar").upload_from_string(data)
    return f"gs://{bucket}/packed/shard-00000.tar", data


def test_a_shard_is_read_while_it_downloads_then_appears_whole(
    gcs_bucket, gcs_admin, fault_proxy, tmp_path
):
    uri, data = _shard(gcs_admin, gcs_bucket)
    proxy = fault_proxy(set_env=True, hold_bodies_after=1 << 20)  # the body stops after a MiB
    counters = Counters()
    # Bounded: a cache that waited for the whole shard would fail here within seconds.
    storage = Storage(counters=counters, request_timeout_s=5, deadline_s=10)
    cache = ShardCache(str(tmp_path), max_bytes=1 << 30, storage=storage, counters=counters)
    cache.prefetch(uri)
    with cache.opened(uri, upto=4096) as partial:
        assert ".tmp-" in partial and cache.total_bytes == 0, "not complete yet"
        assert read_range(partial, 1000, 3096) == data[1000:4096]
        proxy.configure(hold_bodies_after=None)
        with cache.opened(uri) as whole:  # waits for all of it
            assert ".tmp-" not in whole
            assert read_range(whole, 0, -1) == data
        assert os.path.exists(partial), "a reader still holds the temporary name"
    assert sorted(os.listdir(tmp_path / SHARDS_FOLDER)) == [MARKER, os.path.basename(whole)]
    assert cache.total_bytes == len(data) and counters.get("shard_downloads") == 1
    assert proxy.stats()["requests"] == 1, "one GET: no metadata request first"
    cache.close()


def test_eviction_keeps_to_the_caches_marked_subfolder_and_its_own_names(
    gcs_bucket, gcs_admin, tmp_path
):
    # The case: --cache-dir home --cache-size-mb 1 with a user's 2 MB file in home.
    (tmp_path / "big.bin").write_bytes(b"u" * (2 << 20))
    (tmp_path / "old.tmp-x").mkdir()  # a folder named like a download: crashed the cache
    own = tmp_path / SHARDS_FOLDER
    own.mkdir()
    (own / MARKER).write_bytes(b"")
    (own / "notes.tmp-1").write_bytes(b"n" * 100)  # foreign files inside the cache's folder
    (own / ("0123456789abcdef-x.tmp-" + "0" * 32)).mkdir()  # a folder, not a download
    blobs = gcs_admin.bucket(gcs_bucket)
    uris = []
    for i in range(3):
        blobs.blob(f"packed/shard-{i}.tar").upload_from_string(bytes([i]) * (600 << 10))
        uris.append(f"gs://{gcs_bucket}/packed/shard-{i}.tar")
    cache = ShardCache(str(tmp_path), max_bytes=1 << 20, storage=Storage())
    for uri in uris:
        with cache.opened(uri) as path:
            assert read_range(path, 0, 4) == bytes([uris.index(uri)]) * 4
    cache.close()
    assert cache.counters.get("shard_evictions") == 2, "its own shards are still evicted"
    cache = ShardCache(str(tmp_path), max_bytes=1 << 20, storage=Storage())  # a restart
    assert cache.total_bytes == 600 << 10
    assert (tmp_path / "big.bin").stat().st_size == 2 << 20
    assert (tmp_path / "old.tmp-x").is_dir()
    assert (own / "notes.tmp-1").stat().st_size == 100
    assert (own / ("0123456789abcdef-x.tmp-" + "0" * 32)).is_dir()


def test_a_broken_download_resumes_where_it_stopped(gcs_bucket, gcs_admin, fault_proxy, tmp_path):
    uri, data = _shard(gcs_admin, gcs_bucket)
    # Half the body, then a clean close under the full Content-Length.
    proxy = fault_proxy(set_env=True, only_paths=MEDIA, max_faults=1, truncate=1.0)
    counters = Counters()
    seen: list[int] = []
    path = str(tmp_path / "s.tar")
    size = Storage(counters=counters).download_file(uri, path, progress=seen.append)
    assert size == len(data) and read_range(path, 0, -1) == data
    assert proxy.stats()["truncate"] == 1 and counters.get("retries") == 1
    assert seen == sorted(seen) and seen[-1] == len(data), "resumed, never started over"
    assert len(data) // 2 in seen, "the half that arrived was kept"


def test_a_body_that_fails_its_crc32c_is_downloaded_again(
    gcs_bucket, gcs_admin, fault_proxy, tmp_path
):
    uri, data = _shard(gcs_admin, gcs_bucket)
    # Half the body with no Content-Length: only the whole-object crc32c can tell.
    proxy = fault_proxy(
        set_env=True, only_paths=MEDIA, max_faults=1, truncate=1.0, truncate_length=False
    )
    counters = Counters()
    path = str(tmp_path / "s.tar")
    assert Storage(counters=counters).download_file(uri, path) == len(data)
    assert read_range(path, 0, -1) == data
    assert proxy.stats()["truncate"] == 1 and counters.get("retries") == 1
