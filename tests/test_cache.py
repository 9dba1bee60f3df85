import hashlib
import os

import pytest

from trainer.data.cache import BYTES_FOLDER, MARKER, ByteCache
from trainer.errors import ConfigError


def _entries(cache: ByteCache) -> list[str]:
    return [f for _, _, fs in os.walk(cache.directory) for f in fs if f != MARKER]


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
    assert len(_entries(cache)) == 2


def test_entries_survive_a_restart_and_temp_files_are_cleaned(tmp_path):
    ByteCache(str(tmp_path), max_bytes=1000).put("u", b"x" * 10)
    key = hashlib.sha256(b"dead").hexdigest()
    stray = tmp_path / BYTES_FOLDER / key[:2]
    stray.mkdir(exist_ok=True)
    (stray / f".{key}.abc123_x.tmp").write_bytes(b"half")  # a writer killed mid-put
    cache = ByteCache(str(tmp_path), max_bytes=1000)
    assert cache.get("u") == b"x" * 10
    assert not (stray / f".{key}.abc123_x.tmp").exists()
    assert len(cache) == 1


def test_object_larger_than_the_cache_is_not_stored(tmp_path):
    cache = ByteCache(str(tmp_path), max_bytes=10)
    cache.put("big", b"x" * 11)
    assert cache.get("big") is None
    assert cache.total_bytes == 0


def test_the_cache_keeps_to_its_marked_subfolder_and_leaves_foreign_files(tmp_path):
    # A user's files beside the cache, and inside its folder under names it never uses.
    (tmp_path / "big.bin").write_bytes(b"u" * 5000)
    (tmp_path / "docs" / ".tmpX").mkdir(parents=True)
    (tmp_path / "docs" / ".tmpnotes").write_bytes(b"notes")
    cache = ByteCache(str(tmp_path), max_bytes=100)
    assert cache.directory == str(tmp_path / BYTES_FOLDER)
    assert (tmp_path / BYTES_FOLDER / MARKER).is_file()
    own = tmp_path / BYTES_FOLDER
    (own / "ab" / ".tmpY").mkdir(parents=True)  # a folder with a temporary-looking name
    (own / "ab" / ".tmpfile").write_bytes(b"theirs")
    (own / "ab" / ("ab" + "0" * 62)).mkdir()  # a folder named like an entry
    (own / "zz").mkdir()
    (own / "zz" / "f").write_bytes(b"z" * 500)
    (own / "readme.txt").write_bytes(b"r" * 500)
    for i in range(5):  # more than max_bytes: eviction runs again and again
        cache.put(f"gs://b/{i}", bytes([i]) * 60)
    cache = ByteCache(str(tmp_path), max_bytes=100)  # a restart lists the folder
    assert len(cache) == 1 and cache.get("gs://b/4") == bytes([4]) * 60
    assert (tmp_path / "big.bin").stat().st_size == 5000
    assert (tmp_path / "docs" / ".tmpnotes").read_bytes() == b"notes"
    assert (tmp_path / "docs" / ".tmpX").is_dir() and (own / "ab" / ".tmpY").is_dir()
    assert (own / "ab" / ".tmpfile").read_bytes() == b"theirs"
    assert (own / "ab" / ("ab" + "0" * 62)).is_dir()
    assert (own / "zz" / "f").stat().st_size == 500
    assert (own / "readme.txt").stat().st_size == 500


def test_an_unmarked_folder_of_the_caches_name_holding_files_is_refused(tmp_path):
    (tmp_path / BYTES_FOLDER).mkdir()
    (tmp_path / BYTES_FOLDER / "mine.txt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=rf"--cache-dir {tmp_path}: .*{BYTES_FOLDER} holds"):
        ByteCache(str(tmp_path), max_bytes=100)
    assert (tmp_path / BYTES_FOLDER / "mine.txt").read_bytes() == b"x"
