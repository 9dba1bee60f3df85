"""A bounded local disk cache of fetched object bytes, evicting least recently used first.

It sits between the Sequence and the object store so that the second epoch reads local disk
instead of GCS. Files are written atomically (temp file + rename): a killed job never leaves a
half-written entry that a restarted job would serve.

The cache lives in its own subfolder of the --cache-dir, ``streamtrain-bytes/``, marked as the
trainer's by a ``.streamtrain-cache`` file, and only ever lists, evicts or removes files named
as it names them (``<2 hex>/<sha256>`` and their temporary names): anything else there is left
alone. A folder of that name without the marker that already holds something is refused.

    cache = ByteCache("/var/cache/streamtrain", max_bytes=10 << 30)  # .../streamtrain-bytes/
    data = cache.fetch(uri, storage.read, counters)   # get, or read and put
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable

from trainer.data.counters import Counters
from trainer.data.localfs import local_call, write_file
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)

MARKER = ".streamtrain-cache"
BYTES_FOLDER = "streamtrain-bytes"
_SUBDIR = re.compile(r"[0-9a-f]{2}")
_ENTRY = re.compile(r"[0-9a-f]{64}")
_TEMP = re.compile(r"\.([0-9a-f]{64})\.[a-z0-9_]+\.tmp")  # mkstemp(prefix=".<key>.", ".tmp")


def owned_folder(cache_dir: str, name: str) -> str:
    """`cache_dir/name`, created and marked as the trainer's; an unmarked one with files in it
    is someone else's and refused (exit 2), since the cache evicts what it finds there."""
    folder = os.path.join(cache_dir, name)
    marker = os.path.join(folder, MARKER)
    local_call(folder, "create the cache folder", lambda: os.makedirs(folder, exist_ok=True))
    if not os.path.isfile(marker):
        if local_call(folder, "list the cache folder", lambda: os.listdir(folder)):
            raise ConfigError(
                f"--cache-dir {cache_dir}: {folder} holds files the trainer did not write "
                f"(it has no {MARKER} file); move them away or choose another --cache-dir"
            )
        text = b"streamtrain cache: files here are evicted as the trainer needs the room\n"
        local_call(marker, "write", lambda: write_file(marker, text))
    return folder


def own_files(folder: str) -> list[os.DirEntry]:
    """The regular files directly in `folder` (links and folders are never the cache's)."""
    with os.scandir(folder) as entries:
        return [e for e in entries if e.is_file(follow_symlinks=False)]


class ByteCache:
    """Thread-safe LRU of byte strings on local disk, bounded by total size."""

    def __init__(self, cache_dir: str, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = owned_folder(cache_dir, BYTES_FOLDER)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._total = 0
        self._load_existing()

    @staticmethod
    def _key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key)

    def _load_existing(self) -> None:
        # Entries from an earlier run of the same job are reused, oldest access evicted first.
        found = []
        with os.scandir(self.directory) as subdirs:
            names = [d.name for d in subdirs if d.is_dir(follow_symlinks=False)]
        for sub in names:
            if not _SUBDIR.fullmatch(sub):
                continue
            for entry in own_files(os.path.join(self.directory, sub)):
                temp = _TEMP.fullmatch(entry.name)
                if temp and temp.group(1).startswith(sub):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)  # left by a killed writer
                elif _ENTRY.fullmatch(entry.name) and entry.name.startswith(sub):
                    st = entry.stat(follow_symlinks=False)
                    found.append((st.st_atime, entry.name, st.st_size))
        for _, key, size in sorted(found):
            self._entries[key] = size
            self._total += size
        self._evict()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, uri: str) -> bytes | None:
        key = self._key(uri)
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:  # evicted by another thread meanwhile
            return None

    def fetch(self, uri: str, read: Callable[[str], bytes], counters: Counters) -> bytes:
        """The cached bytes of `uri`, or `read(uri)` kept for next time; hits and misses counted."""
        data = self.get(uri)
        if data is not None:
            counters.add("cache_hits")
            return data
        counters.add("cache_misses")
        data = read(uri)
        self.put(uri, data)
        return data

    def put(self, uri: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        key = self._key(uri)
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            # A full or read-only cache disk must not stop training: the store still has it.
            logger.warning("cache write failed for %s: %s", uri, e)
            if os.path.exists(tmp):
                os.unlink(tmp)
            return
        with self._lock:
            self._total += len(data) - self._entries.pop(key, 0)
            self._entries[key] = len(data)
            self._evict()

    def _evict(self) -> None:
        while self._total > self.max_bytes and self._entries:
            key, size = self._entries.popitem(last=False)
            self._total -= size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(key))
