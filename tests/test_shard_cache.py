"""ShardCache and Storage.download_file against the emulator through the FaultProxy: a shard is
read while it downloads, appears whole under its name, and a broken transfer resumes."""

from __future__ import annotations

import os
import random

from trainer.data.counters import Counters
from trainer.data.ranges import read_range
from trainer.data.storage import Storage
from trainer.pack.shards import ShardCache

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
    assert os.listdir(tmp_path) == [os.path.basename(whole)]
    assert cache.total_bytes == len(data) and counters.get("shard_downloads") == 1
    assert proxy.stats()["requests"] == 1, "one GET: no metadata request first"
    cache.close()


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
