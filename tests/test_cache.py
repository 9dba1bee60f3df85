import os

from trainer.data.cache import ByteCache


def test_get_put_and_lru_eviction_by_size(tmp_path):
    cache = ByteCache(str(tmp_path), max_bytes=250)
    cache.put("gs://b/a", b"a" * 100)
    cache.put("gs://b/b", b"b" * 100)
    assert cache.get("gs://b/a") == b"a" * 100  # a is now the most recent
    cache.put("gs://b/c", b"c" * 100)  # over budget: evicts b, the least recent
    assert cache.get("gs://b/b") is None
    assert cache.get("gs://b/a") == b"a" * 100
    assert cache.get("gs://b/c") == b"c" * 100
    assert cache.total_bytes == 200
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert len(files) == 2


def test_entries_survive_a_restart_and_temp_files_are_cleaned(tmp_path):
    ByteCache(str(tmp_path), max_bytes=1000).put("u", b"x" * 10)
    stray = tmp_path / "ab"
    stray.mkdir(exist_ok=True)
    (stray / ".tmpdead").write_bytes(b"half")
    cache = ByteCache(str(tmp_path), max_bytes=1000)
    assert cache.get("u") == b"x" * 10
    assert not (stray / ".tmpdead").exists()
    assert len(cache) == 1


def test_object_larger_than_the_cache_is_not_stored(tmp_path):
    cache = ByteCache(str(tmp_path), max_bytes=10)
    cache.put("big", b"x" * 11)
    assert cache.get("big") is None
    assert cache.total_bytes == 0
