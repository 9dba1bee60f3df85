"""A bounded local disk cache of fetched object bytes, evicting least recently used first.

It sits between the Sequence and the object store so that the second epoch reads local disk
instead of GCS. Files are written atomically (temp file + rename): a killed job never leaves a
half-written entry that a restarted job would serve.

    cache = ByteCache("/var/cache/streamtrain", max_bytes=10 << 30)
    data = cache.fetch(uri, storage.read, counters)   # get, or read and put
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable

from trainer.data.counters import Counters

logger = logging.getLogger(__name__)


class ByteCache:
    """Thread-safe LRU of byte strings on local disk, bounded by total size."""

    def __init__(self, directory: str, *, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._total = 0
        os.makedirs(directory, exist_ok=True)
        self._load_existing()

    @staticmethod
    def _key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key)

    def _load_existing(self) -> None:
        # Entries from an earlier run of the same job are reused, oldest access evicted first.
        found = []
        for sub in os.listdir(self.directory):
            subdir = os.path.join(self.directory, sub)
            if not os.path.isdir(subdir):
                continue
            for name in os.listdir(subdir):
                path = os.path.join(subdir, name)
                if name.startswith(".tmp"):
                    os.unlink(path)  # left by a killed writer
                    continue
                st = os.stat(path)
                found.append((st.st_atime, name, st.st_size))
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
        fd, tmp = tempfile.mkstemp(prefix=".tmp", dir=os.path.dirname(path))
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
