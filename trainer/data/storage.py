"""One interface for local paths and `gs://bucket/prefix` URIs: list, read, write, copy trees.

    storage = Storage(concurrency=32, deadline_s=60, counters=counters)
    uris = storage.list("gs://my-bucket/images", extensions=(".jpg", ".png"))
    data = storage.read(uris[0])
    storage.write(join("gs://my-bucket/runs/1", "metrics.json"), b"{}")
    storage.check_writable("gs://my-bucket/runs/1")  # fail fast before hours of training

The GCS connection (client, pool, retries, error translation) is trainer.data.gcs; local
files are trainer.data.localfs. Every GCS call retries 408/429/5xx, connection resets, timeouts
and truncated bodies with the library's exponential backoff with jitter (api_core Retry), bounded by
`deadline_s` (the library default of 120 s is far too long for an input pipeline). Past the
deadline the call raises StorageUnavailableError (exit code 5: retry later). A missing object or
bucket raises StorageNotFoundError, a refused one StoragePermissionError (exit code 2). Each
retry is counted into counters["retries"]; each read into "objects_fetched", "bytes_fetched" and
"fetch_seconds" (local reads too, so the figures compare).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import mimetypes
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import google_crc32c
from google.api_core import exceptions as api_exceptions

from trainer.data.counters import Counters
from trainer.data.gcs import (
    GCS_SCHEME,
    GcsConnection,
    crc32c_of,
    is_gcs,
    join,
    split_gcs,
    verify_crc32c,
)
from trainer.data.localfs import local_call, place_tree, read_file, remove_file, write_file
from trainer.data.localwalk import list_files
from trainer.errors import StorageNotFoundError

logger = logging.getLogger(__name__)
__all__ = ["Storage", "is_gcs", "join", "split_gcs"]

_DOWNLOAD_READ = 1 << 20  # bytes per read of a download: few Python steps, little memory


class Storage:
    """List, read and write objects under local paths or gs:// URIs; see the module docstring.

    `concurrency` sizes the HTTP connection pool (and the thread pool of upload_dir/download_dir);
    callers fetching with N threads should pass N. `deadline_s` bounds the retries of one call
    (api_core gives up as soon as the next backoff would end past it, so a call takes at most
    about deadline_s + request_timeout_s), `request_timeout_s` one HTTP request (connect, read).
    `list_page_size` is the number of objects per listing request.

    Past 250 lines on purpose: one method per storage verb, each with its GCS and local halves
    side by side, so that a caller never branches on the scheme.
    """

    def __init__(
        self,
        *,
        concurrency: int = 32,
        deadline_s: float = 60.0,
        request_timeout_s: float = 20.0,
        counters: Counters | None = None,
        project: str | None = None,
        list_page_size: int = 1000,
    ) -> None:
        self._gcs = GcsConnection(
            concurrency=concurrency,
            deadline_s=deadline_s,
            request_timeout_s=request_timeout_s,
            counters=counters,
            project=project,
        )
        self._concurrency = concurrency
        self._counters = counters
        self._list_page_size = list_page_size

    def close(self) -> None:
        """Release the HTTP connections (the object can still be used afterwards)."""
        self._gcs.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _media(self, uri: str) -> tuple[Any, str]:
        """The client's authorized session and the JSON API's media URL of object `uri`."""
        bucket, key = split_gcs(uri)
        session = self._gcs.client()._http  # sets the endpoint
        path = f"b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        return session, f"{self._gcs.endpoint}/download/storage/v1/{path}?alt=media"

    def _count_fetch(self, nbytes: int, started: float) -> None:
        if self._counters is not None:
            self._counters.add("objects_fetched")
            self._counters.add("bytes_fetched", nbytes)
            self._counters.add("fetch_seconds", time.perf_counter() - started)

    # --- public API ------------------------------------------------------------------------

    def list(self, uri: str, *, extensions: Iterable[str] | None = None) -> list[str]:
        """All objects under `uri` (a directory / prefix), recursive, sorted, as full URIs.

        `extensions` filters by suffix, case-insensitively, e.g. (".jpg", ".png"). An empty
        result is returned as []; a missing bucket or local directory is StorageNotFoundError.
        """
        suffixes = tuple(e.lower() for e in extensions) if extensions is not None else None

        def wanted(name: str) -> bool:
            return suffixes is None or name.lower().endswith(suffixes)

        if not is_gcs(uri):
            root = os.path.abspath(uri)
            if not os.path.isdir(root):
                raise StorageNotFoundError(f"{uri}: local directory does not exist")
            # Symlinks are not followed (trainer.data.localwalk says why and logs them).
            return local_call(uri, "list", lambda: list_files(root, wanted=wanted)[0])

        bucket, key = split_gcs(uri)
        # Directory semantics like a local path: gs://b/train lists train/..., not training/...
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def run() -> list[str]:
            blobs = self._gcs.client().list_blobs(
                bucket,
                prefix=prefix,
                page_size=self._list_page_size,
                retry=self._gcs.retry,
                timeout=self._gcs.timeout,
            )
            return sorted(
                f"{GCS_SCHEME}{bucket}/{blob.name}"
                for blob in blobs
                if not blob.name.endswith("/") and wanted(blob.name)
            )

        try:
            return self._gcs.call(uri, "list objects", run, "storage.objects.list")
        except StorageNotFoundError as exc:
            # Listing a prefix never 404s; only a missing bucket does.
            raise StorageNotFoundError(
                f"GCS bucket {bucket!r} does not exist (listing {uri}): check the bucket name"
            ) from exc

    def read(self, uri: str) -> bytes:
        """The whole object; truncated transfers are detected (length, checksum) and retried."""
        started = time.perf_counter()
        if not is_gcs(uri):
            data = local_call(uri, "read", lambda: read_file(uri))
        else:
            session, url = self._media(uri)

            # One authorized GET of the JSON API's media endpoint per attempt, retried here
            # around whole downloads. `Blob.download_as_bytes` costs about 2 ms of CPU per
            # object, most of it holding the GIL, which caps a 2-core pipeline far below its
            # decode speed; and it resumes a broken download with a Range request whose 206
            # body it does not checksum. Every body returned here passed urllib3's
            # Content-Length check and crc32c against x-goog-hash.
            def download() -> bytes:
                response = session.get(url, timeout=self._gcs.timeout)
                if response.status_code != 200:
                    raise api_exceptions.from_http_response(response)
                data = response.content
                verify_crc32c(data, response.headers.get("x-goog-hash", ""))
                return data

            data = self._gcs.call(
                uri,
                "read the object",
                self._gcs.retry(download),
                "storage.objects.get (roles/storage.objectViewer)",
            )
        self._count_fetch(len(data), started)
        return data

    def write(self, uri: str, data: bytes) -> None:
        """Write `data` atomically: readers see the old object or the new one, never a part."""
        if not is_gcs(uri):
            local_call(uri, "write", lambda: write_file(uri, data))
            return
        bucket, key = split_gcs(uri)
        blob = self._gcs.client().bucket(bucket).blob(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        # A GCS object appears only when its upload completes, so one upload is atomic. Retrying
        # a whole-object upload is safe here: we always write the complete content.
        self._gcs.call(
            uri,
            "write the object",
            lambda: blob.upload_from_string(
                data, content_type=content_type, retry=self._gcs.retry, timeout=self._gcs.timeout
            ),
            "storage.objects.create (roles/storage.objectCreator or objectAdmin)",
        )

    def exists(self, uri: str) -> bool:
        """True if `uri` is an object (or local file/directory) or a non-empty GCS prefix."""
        if not is_gcs(uri):
            return os.path.exists(uri)
        bucket, key = split_gcs(uri)
        client = self._gcs.client()

        def run() -> bool:
            if key and client.bucket(bucket).blob(key).exists(
                retry=self._gcs.retry, timeout=self._gcs.timeout
            ):
                return True
            prefix = key.rstrip("/") + "/" if key.strip("/") else ""
            blobs = client.list_blobs(
                bucket,
                prefix=prefix,
                max_results=1,
                retry=self._gcs.retry,
                timeout=self._gcs.timeout,
            )
            return any(True for _ in blobs)

        try:
            return self._gcs.call(uri, "check the object", run, "storage.objects.get/list")
        except StorageNotFoundError:
            return False  # the bucket itself is missing

    def delete(self, uri: str) -> None:
        """Delete one object or local file; a missing one is fine."""
        if not is_gcs(uri):
            local_call(uri, "delete", lambda: remove_file(uri))
            return
        bucket, key = split_gcs(uri)
        blob = self._gcs.client().bucket(bucket).blob(key)
        with contextlib.suppress(StorageNotFoundError):
            self._gcs.call(
                uri,
                "delete the object",
                lambda: blob.delete(retry=self._gcs.retry, timeout=self._gcs.timeout),
                "storage.objects.delete (roles/storage.objectAdmin)",
            )

    # --- generation-matched writes (gs:// only): the output lease ------------------------------

    def stat_generation(self, uri: str) -> tuple[int, dict[str, str], float] | None:
        """(generation, custom metadata, unix time last written) of gs:// object `uri`, or None."""
        bucket, key = split_gcs(uri)

        def run() -> tuple[int, dict[str, str], float] | None:
            blob = (
                self._gcs.client()
                .bucket(bucket)
                .get_blob(key, retry=self._gcs.retry, timeout=self._gcs.timeout)
            )
            if blob is None:
                return None
            updated = blob.updated.timestamp() if blob.updated else time.time()
            return int(blob.generation), dict(blob.metadata or {}), updated

        return self._gcs.call(uri, "read the object's metadata", run, "storage.objects.get")

    def write_if_generation(
        self, uri: str, data: bytes, *, generation: int, metadata: dict[str, str] | None = None
    ) -> int | None:
        """Writes gs:// object `uri` only if its generation is `generation` (0: only if it does
        not exist); returns the new generation, or None when the precondition failed."""
        bucket, key = split_gcs(uri)
        blob = self._gcs.client().bucket(bucket).blob(key)
        blob.metadata = metadata

        def run() -> int | None:
            try:
                blob.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=generation,
                    retry=self._gcs.retry,
                    timeout=self._gcs.timeout,
                )
            except api_exceptions.PreconditionFailed:
                return None
            return int(blob.generation)

        return self._gcs.call(uri, "write the object", run, "storage.objects.create")

    def delete_if_generation(self, uri: str, *, generation: int) -> bool:
        """Deletes gs:// object `uri` only if its generation is `generation`; True if deleted."""
        bucket, key = split_gcs(uri)
        blob = self._gcs.client().bucket(bucket).blob(key)

        def run() -> bool:
            try:
                blob.delete(
                    if_generation_match=generation,
                    retry=self._gcs.retry,
                    timeout=self._gcs.timeout,
                )
            except (api_exceptions.PreconditionFailed, api_exceptions.NotFound):
                return False
            return True

        return self._gcs.call(uri, "delete the object", run, "storage.objects.delete")

    def upload_dir(self, local_dir: str, uri: str) -> None:
        """Copy the tree under `local_dir` to `uri` (e.g. a SavedModel).

        For gs:// the files are uploaded in parallel, each atomically but not the tree as a
        whole: write a marker object after this returns if readers need to know it is complete.
        A new local destination is copied beside it and renamed into place; into an existing one
        each file is written atomically. Other files under `uri` are never touched.
        """
        if not os.path.isdir(local_dir):
            raise StorageNotFoundError(f"{local_dir}: local directory does not exist")
        if not is_gcs(uri):
            local_call(uri, "write", lambda: place_tree(local_dir, uri))
            return
        files = self.list(local_dir)

        def upload(path: str) -> None:
            rel = os.path.relpath(path, os.path.abspath(local_dir)).replace(os.sep, "/")
            with open(path, "rb") as f:
                self.write(join(uri, rel), f.read())

        self._parallel(upload, files)

    def download_dir(self, uri: str, local_dir: str) -> None:
        """Copy every object under `uri` into `local_dir`, keeping relative paths."""
        if not is_gcs(uri):
            local_call(uri, "read", lambda: shutil.copytree(uri, local_dir, dirs_exist_ok=True))
            return
        bucket, key = split_gcs(uri)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        objects = self.list(uri)

        def download(obj: str) -> None:
            rel = obj[len(f"{GCS_SCHEME}{bucket}/{prefix}") :]
            self.write(os.path.join(local_dir, *rel.split("/")), self.read(obj))

        os.makedirs(local_dir, exist_ok=True)
        self._parallel(download, objects)

    def download_file(
        self, uri: str, path: str, *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Write object `uri` into the local file `path`, front to back; returns its size.

        Not atomic: the caller names a temporary `path` and renames or links it when this
        returns. `progress(n)` is called each time the first `n` bytes are in the file, so a
        reader may use them before the rest arrives (the shard cache does). A gs:// object is
        one GET of the media endpoint, read a MiB at a time; a transfer that breaks resumes at
        the bytes already written (a Range request of the same generation) under the retry
        policy, and the whole body is checked against the crc32c in x-goog-hash at the end.
        google-cloud-storage's sliced download (`transfer_manager`) was used before: it costs
        a metadata request first and tells nothing until a whole slice is in, and its reads
        either loop over 8 KiB (a core per 90 MB/s) or hold the slice in memory.
        """
        started = time.perf_counter()
        if not is_gcs(uri):
            local_call(uri, "read", lambda: shutil.copyfile(uri, path))
            size = os.path.getsize(path)
            if progress is not None:
                progress(size)
        else:
            size = self._gcs_download(uri, path, progress or (lambda n: None))
        self._count_fetch(size, started)
        return size

    def _gcs_download(self, uri: str, path: str, progress: Callable[[int], None]) -> int:
        session, url = self._media(uri)
        state = {"written": 0, "crc": google_crc32c.Checksum(), "hash": "", "generation": ""}

        def attempt() -> None:
            written, headers, where = state["written"], {}, url
            if written:
                headers["Range"] = f"bytes={written}-"
                if state["generation"]:
                    where = f"{url}&generation={state['generation']}"
            with session.get(where, headers=headers, stream=True, timeout=self._gcs.timeout) as r:
                if r.status_code not in (200, 206):
                    raise api_exceptions.from_http_response(r)
                if r.status_code == 200 and written:  # the Range was ignored: from the start
                    written, state["crc"] = 0, google_crc32c.Checksum()
                if r.status_code == 200:
                    state["hash"] = r.headers.get("x-goog-hash", "")
                    state["generation"] = r.headers.get("x-goog-generation", "")
                f.seek(written)
                while chunk := r.raw.read(_DOWNLOAD_READ, decode_content=False):
                    f.write(chunk)
                    f.flush()  # readers pread the file while it grows
                    state["crc"].update(chunk)
                    written = state["written"] = written + len(chunk)
                    progress(written)
            expected = crc32c_of(state["hash"])
            if expected is not None and int.from_bytes(state["crc"].digest(), "big") != expected:
                state["written"], state["crc"] = 0, google_crc32c.Checksum()
                raise ConnectionError(f"crc32c mismatch: {written} bytes differ from x-goog-hash")

        with open(path, "wb") as f:
            self._gcs.call(
                uri,
                "read the object",
                self._gcs.retry(attempt),
                "storage.objects.get (roles/storage.objectViewer)",
            )
        return state["written"]

    def check_writable(self, uri: str) -> None:
        """Fail fast if `uri` (a directory / prefix) cannot be written: write and delete a probe."""
        probe = join(uri, f".streamtrain-write-probe-{uuid.uuid4().hex}")
        if not is_gcs(uri):
            local_call(uri, "write", lambda: os.makedirs(uri, exist_ok=True))
        try:
            self.write(probe, b"")
        except StorageNotFoundError as exc:
            if is_gcs(uri):
                bucket = split_gcs(uri)[0]
                raise StorageNotFoundError(
                    f"GCS bucket {bucket!r} does not exist (checking that {uri} is writable): "
                    "create it or fix the output path"
                ) from exc
            raise
        self.delete(probe)

    def _parallel(self, fn: Callable[[str], None], items: list[str]) -> None:
        workers = max(1, min(self._concurrency, len(items)))
        with concurrent.futures.ThreadPoolExecutor(workers, "storage") as pool:
            # Consuming map() re-raises the first failure; leaving the pool waits for the rest.
            for _ in pool.map(fn, items):
                pass


# --- local files ---------------------------------------------------------------------------
