"""Whole shards on local disk: downloaded ahead of use, bounded by size, LRU evicted.

    cache = ShardCache("/var/cache/shards", max_bytes=50 << 30, storage=storage)
    cache.prefetch(uri)              # start the download on the cache's pool
    with cache.opened(uri) as path:  # wait for it; never evicted while open
        data = read_range(path, offset, size)  # trainer.data.ranges

Local shards are read where they are, never copied. gs:// shards come through
`Storage.download_file` (google-cloud-storage's sliced download), `download_threads` (4: a
block of 4 shards at once) at a time, into a temp name and are renamed into place, so a killed
job leaves no half shard that a restart would trust; files left from an earlier run are
reused, oldest first to go.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator

from trainer.data.counters import Counters
from trainer.data.storage import Storage, is_gcs

logger = logging.getLogger(__name__)


class ShardCache:
    """Thread-safe size-bounded LRU of shard files; see the module docstring."""

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int,
        storage: Storage,
        counters: Counters | None = None,
        download_threads: int = 4,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = directory
        self.max_bytes = max_bytes
        self.storage = storage
        self.counters = counters if counters is not None else Counters()
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._pins: collections.Counter[str] = collections.Counter()
        self._downloads: dict[str, concurrent.futures.Future] = {}
        self._total = 0
        self._threads = download_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        os.makedirs(directory, exist_ok=True)
        self._load_existing()

    def _path(self, uri: str) -> str:
        name = uri.rsplit("/", 1)[-1]
        return os.path.join(
            self.directory, f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{name}"
        )

    def _load_existing(self) -> None:
        found = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if ".tmp-" in name:
                os.unlink(path)  # a download that was killed
                continue
            st = os.stat(path)
            found.append((st.st_mtime, path, st.st_size))
        for _, path, size in sorted(found):
            self._entries[path] = size
            self._total += size

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def prefetch(self, uri: str) -> None:
        """Start downloading `uri` unless it is local, cached or on its way."""
        if not is_gcs(uri):
            return
        with self._lock:
            if self._path(uri) in self._entries or uri in self._downloads:
                return
            self._downloads[uri] = self._submit(uri)

    @contextlib.contextmanager
    def opened(self, uri: str) -> Iterator[str]:
        """The local path of shard `uri`, pinned against eviction while the block runs."""
        if not is_gcs(uri):
            yield uri
            return
        path = self._path(uri)
        while True:
            with self._lock:
                if path in self._entries:
                    self._entries.move_to_end(path)
                    self._pins[path] += 1
                    self.counters.add("shard_cache_hits")
                    break
                future = self._downloads.get(uri)
                if future is None:
                    future = self._downloads[uri] = self._submit(uri)
            future.result()  # a failed download raises here, for every waiter
        try:
            yield path
        finally:
            with self._lock:
                self._pins[path] -= 1
                if not self._pins[path]:
                    del self._pins[path]
                self._evict()

    def _submit(self, uri: str) -> concurrent.futures.Future:
        # Under the lock. The pool starts again after close(): the exported model's evaluation
        # reads the validation shards after the training inputs were closed.
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "shard-download")
        return self._pool.submit(self._download, uri)

    def _download(self, uri: str) -> None:
        path = self._path(uri)
        try:
            size = self.storage.download_file(uri, path)
            self.counters.add("shard_downloads")
            with self._lock:
                self._entries[path] = size
                self._total += size
                self._evict()
        finally:
            with self._lock:
                self._downloads.pop(uri, None)

    def _evict(self) -> None:
        # Oldest first, skipping pinned shards; the newest entry stays even when over the bound.
        for path in list(self._entries):
            if self._total <= self.max_bytes or len(self._entries) <= 1:
                return
            if self._pins.get(path):
                continue
            self._total -= self._entries.pop(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.counters.add("shard_evictions")

    def close(self) -> None:
        """Stop the downloads (a later read starts the pool again)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._downloads.clear()  # cancelled below; a later read starts them again
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
