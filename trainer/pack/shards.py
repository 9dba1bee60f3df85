"""Whole shards on local disk: downloaded ahead of use, bounded by size, LRU evicted.

    cache = ShardCache("/var/cache/streamtrain", max_bytes=50 << 30, storage=storage)
    cache.prefetch(uri)                          # start the download on the cache's pool
    with cache.opened(uri, upto=end) as path:    # wait for its first `end` bytes (or all)
        data = read_range(path, offset, size)    # trainer.data.ranges; end >= offset + size

Local shards are read where they are, never copied. gs:// shards come through
`Storage.download_file`, `download_threads` (4: a block of 4 shards at once) at a time, into a
temporary name that readers may already read from: `opened(uri, upto=n)` returns as soon as
the first n bytes are there, so a block's first samples decode while the rest is on its way
(ShardPlan reads each shard front to back in windows). A complete download is hard-linked to
its own name, so a killed job leaves no half shard that a restart would trust; the temporary
name goes once no reader holds it. Files left from an earlier run are reused, oldest first to go.
The shards live in ``streamtrain-shards/`` under the cache folder, marked as the trainer's like
the byte cache's (trainer.data.cache.owned_folder); only files named as this cache names them
(``<16 hex>-<shard name>`` and their ``.tmp-<32 hex>`` downloads) are listed, evicted or removed.
Bytes taken before a download is complete are checked like all others, by the index's
per-sample crc32c; the whole-object crc32c is checked when the download ends.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator

from trainer.data.cache import own_files, owned_folder
from trainer.data.counters import Counters
from trainer.data.storage import Storage, is_gcs

logger = logging.getLogger(__name__)

SHARDS_FOLDER = "streamtrain-shards"
_TEMP = re.compile(r"[0-9a-f]{16}-.+\.tmp-[0-9a-f]{32}")
_ENTRY = re.compile(r"[0-9a-f]{16}-.+")


class _Cancelled(Exception):
    """The cache was closed while a download ran."""


@dataclasses.dataclass(eq=False)
class _Download:
    """One shard on its way: its first `ready` bytes are in `tmp`."""

    tmp: str
    ready: int = 0
    done: bool = False
    error: BaseException | None = None
    readers: int = 0
    cancelled: bool = False


class ShardCache:
    """Thread-safe size-bounded LRU of shard files; see the module docstring."""

    def __init__(
        self,
        cache_dir: str,
        *,
        max_bytes: int,
        storage: Storage,
        counters: Counters | None = None,
        download_threads: int = 4,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = owned_folder(cache_dir, SHARDS_FOLDER)
        self.max_bytes = max_bytes
        self.storage = storage
        self.counters = counters if counters is not None else Counters()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a download moved on or ended
        self._entries: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._pins: collections.Counter[str] = collections.Counter()
        self._downloads: dict[str, _Download] = {}
        self._total = 0
        self._threads = download_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_existing()

    def _path(self, uri: str) -> str:
        name = uri.rsplit("/", 1)[-1]
        return os.path.join(
            self.directory, f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{name}"
        )

    def _load_existing(self) -> None:
        found = []
        for entry in own_files(self.directory):
            if _TEMP.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)  # a download that was killed
            elif _ENTRY.fullmatch(entry.name):
                st = entry.stat(follow_symlinks=False)
                found.append((st.st_mtime, entry.path, st.st_size))
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
            if self._path(uri) not in self._entries and uri not in self._downloads:
                self._start(uri)

    @contextlib.contextmanager
    def opened(self, uri: str, *, upto: int | None = None) -> Iterator[str]:
        """A local path holding shard `uri`, complete or at least its first `upto` bytes,
        pinned against eviction (or removal) until the block is left. A failed download
        raises here, for every reader waiting on it."""
        if not is_gcs(uri):
            yield uri
            return
        path = self._path(uri)
        with self._lock:
            while True:
                if path in self._entries:
                    self._entries.move_to_end(path)
                    self._pins[path] += 1
                    self.counters.add("shard_cache_hits")
                    partial = None
                    break
                download = self._downloads.get(uri) or self._start(uri)
                while not (download.done or download.error or _covers(download, upto)):
                    self._changed.wait()
                if download.error is not None:
                    raise download.error
                if not download.done:
                    download.readers += 1
                    partial = download
                    break
        try:
            yield path if partial is None else partial.tmp
        finally:
            with self._lock:
                if partial is not None:
                    partial.readers -= 1
                    self._drop_tmp(partial)
                else:
                    self._pins[path] -= 1
                    if not self._pins[path]:
                        del self._pins[path]
                self._evict()

    def _start(self, uri: str) -> _Download:
        # Under the lock. The pool starts again after close(): the exported model's evaluation
        # reads the validation shards after the training inputs were closed.
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "shard-download")
        tmp = f"{self._path(uri)}.tmp-{uuid.uuid4().hex}"
        download = self._downloads[uri] = _Download(tmp)
        self._pool.submit(self._download, uri, download)
        return download

    def _download(self, uri: str, download: _Download) -> None:
        path = self._path(uri)

        def progress(n: int) -> None:
            with self._lock:
                if download.cancelled:
                    raise _Cancelled(f"{uri}: the shard cache was closed")
                if n > download.ready:
                    download.ready = n
                    self._changed.notify_all()

        try:
            size = self.storage.download_file(uri, download.tmp, progress=progress)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a leftover of the same name (none is in the cache)
            os.link(download.tmp, path)  # appears complete, at once
            self.counters.add("shard_downloads")
        except BaseException as e:
            with self._lock:
                download.error = e
                self._finish(uri, download)
            if not isinstance(e, _Cancelled):
                logger.debug("shard download %s failed: %s", uri, e)
            return
        with self._lock:
            self._entries[path] = size
            self._total += size
            download.done = True
            self._finish(uri, download)
            self._evict()

    def _finish(self, uri: str, download: _Download) -> None:
        # Under the lock: later readers start afresh (or read the complete shard).
        if self._downloads.get(uri) is download:
            del self._downloads[uri]
        self._drop_tmp(download)
        self._changed.notify_all()

    def _drop_tmp(self, download: _Download) -> None:
        if (download.done or download.error) and not download.readers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(download.tmp)

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
            stopping = list(self._downloads.items())
            for _, download in stopping:
                download.cancelled = True  # a running one stops at its next MiB
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for uri, download in stopping:  # those queued never ran: their readers stop too
                if not (download.done or download.error):
                    download.error = _Cancelled(f"{uri}: the shard cache was closed")
                    self._finish(uri, download)


def _covers(download: _Download, upto: int | None) -> bool:
    return upto is not None and download.ready >= upto
