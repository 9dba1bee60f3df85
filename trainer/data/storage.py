"""One interface for local paths and `gs://bucket/prefix` URIs: list, read, write, copy trees.

    storage = Storage(concurrency=32, deadline_s=60, counters=counters)
    uris = storage.list("gs://my-bucket/images", extensions=(".jpg", ".png"))
    data = storage.read(uris[0])
    storage.write(join("gs://my-bucket/runs/1", "metrics.json"), b"{}")
    storage.check_writable("gs://my-bucket/runs/1")  # fail fast before hours of training

GCS goes through google-cloud-storage with Application Default Credentials (Workload Identity in
the cluster). With STORAGE_EMULATOR_HOST set (tests, benchmarks) the library talks to that URL
instead; we then use anonymous credentials and a fixed project so no ADC lookup happens. The
variable is read when the first GCS call creates the client.

Every GCS call retries 408/429/5xx, connection resets, timeouts and truncated bodies with the
library's exponential backoff with jitter (`google.api_core.retry.Retry`), bounded by
`deadline_s` (the library default of 120 s is far too long for an input pipeline). Past the
deadline the call raises StorageUnavailableError (exit code 5: retry later). A missing object or
bucket raises StorageNotFoundError, a refused one StoragePermissionError (exit code 2). Each
retry is counted into counters["retries"]; each read into "objects_fetched", "bytes_fetched" and
"fetch_seconds" (local reads too, so the figures compare).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import http.client
import logging
import mimetypes
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote

import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from requests.adapters import HTTPAdapter

from trainer.data.counters import Counters
from trainer.errors import (
    ConfigError,
    DataError,
    StorageNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
    TrainerError,
)

logger = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
EMULATOR_PROJECT = "streamtrain-emulator"
# Read/write objects only; no bucket administration.
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)

_POOL_HEADROOM = 4
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # also what the library raises when fewer bytes arrived than stored
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # body cut short (Content-Length mismatch)
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.PoolError,
    TimeoutError,
)

T = TypeVar("T")


def is_gcs(uri: str) -> bool:
    """True for `gs://...` URIs, False for local paths."""
    return uri.startswith(GCS_SCHEME)


def join(base: str, *parts: str) -> str:
    """Join path parts under `base`; `/` for gs:// URIs, os.path.join for local paths."""
    if not is_gcs(base):
        return os.path.join(base, *parts)
    cleaned = [p.strip("/") for p in parts if p.strip("/")]
    return "/".join([base.rstrip("/"), *cleaned]) if cleaned else base


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` → ("bucket", "a/b"); raises ConfigError for a URI without a bucket."""
    if not is_gcs(uri):
        raise ConfigError(f"{uri!r} is not a gs:// URI")
    bucket, _, key = uri[len(GCS_SCHEME) :].partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r} names no bucket: use gs://BUCKET/PATH")
    return bucket, key


def _status_of(exc: BaseException) -> int | None:
    """HTTP status carried by a google-api-core or google-cloud-storage media exception."""
    code = getattr(exc, "code", None)
    if isinstance(exc, api_exceptions.GoogleAPICallError) and isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Retry predicate: worth trying again (throttling, server errors, broken transfers)."""
    from google.cloud.storage.exceptions import DataCorruption

    if isinstance(exc, (*_RETRYABLE_TYPES, DataCorruption)):
        return True
    if isinstance(exc, auth_exceptions.TransportError):
        # Token refresh failed on the network (metadata server hiccup): transient too.
        return True
    status = _status_of(exc)
    return status is not None and status in _RETRYABLE_STATUS


def _verify_crc32c(data: bytes, goog_hash: str) -> None:
    """Raise a retryable error when the body's crc32c differs from the server's x-goog-hash."""
    for part in goog_hash.split(","):
        name, _, value = part.strip().partition("=")
        if name == "crc32c" and value:
            expected = int.from_bytes(base64.b64decode(value), "big")
            if google_crc32c.value(data) != expected:
                raise ConnectionError(
                    f"crc32c mismatch: got {len(data)} bytes that do not match x-goog-hash"
                )
            return


def _describe(exc: BaseException) -> str:
    """A short one-line description of an exception for user-facing messages."""
    status = _status_of(exc)
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if status is not None:
        return f"HTTP {status}: {text}"
    return f"{type(exc).__name__}: {text}"


class Storage:
    """List, read and write objects under local paths or gs:// URIs; see the module docstring.

    `concurrency` sizes the HTTP connection pool (and the thread pool of upload_dir/download_dir);
    callers fetching with N threads should pass N. `deadline_s` bounds the retries of one call
    (api_core gives up as soon as the next backoff would end past it, so a call takes at most
    about deadline_s + request_timeout_s), `request_timeout_s` one HTTP request (connect, read).
    `list_page_size` is the number of objects per listing request.
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
        if concurrency < 1:
            raise ConfigError(f"storage concurrency must be ≥ 1, got {concurrency}")
        self._concurrency = concurrency
        self._deadline_s = deadline_s
        self._timeout = (request_timeout_s, request_timeout_s)
        self._endpoint = ""  # set with the client
        self._counters = counters
        self._project = project
        self._list_page_size = list_page_size
        self._client_lock = threading.Lock()
        self._client_obj: Any = None
        # Backoff: 0.2 s doubling to 8 s, each sleep drawn uniformly from [0, 2×delay] by
        # api_core (jitter), until `deadline_s` has passed.
        self._retry = Retry(
            predicate=is_transient,
            initial=0.2,
            maximum=8.0,
            multiplier=2.0,
            timeout=deadline_s,
            on_error=self._on_retry,
        )

    # --- client ----------------------------------------------------------------------------

    def _client(self) -> Any:
        """The shared google-cloud-storage client, created on first use.

        One client for all threads rather than one per thread: its transport is a
        requests.Session whose urllib3 pool is thread-safe, so one pool sized to the fetch
        concurrency reuses keep-alive connections across threads, and one set of credentials
        means one token refresh instead of one per thread (google-auth refreshes under a lock).
        requests' default pool keeps only 10 connections per host, so 32 fetch threads would
        churn connections and log "Connection pool is full"; hence the mounted adapter.
        """
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = self._make_client()
            return self._client_obj

    def _make_client(self) -> Any:
        import google.auth
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession
        from google.cloud import storage

        emulator = os.environ.get(EMULATOR_ENV, "").rstrip("/")
        # Media downloads go straight to this endpoint (see `read`); like the client, the
        # emulator variable is read once, when the client is made.
        self._endpoint = (
            (emulator if "://" in emulator else f"http://{emulator}")
            if emulator
            else "https://storage.googleapis.com"
        )
        if emulator:
            credentials: Any = AnonymousCredentials()
            project: str | None = self._project or EMULATOR_PROJECT
        else:
            try:
                credentials, default_project = google.auth.default(scopes=_SCOPES)
            except auth_exceptions.DefaultCredentialsError as exc:
                raise StoragePermissionError(
                    "no Google Cloud credentials found (Application Default Credentials): in "
                    "the cluster bind the pod's Kubernetes service account to a Google service "
                    "account (Workload Identity); locally run `gcloud auth application-default "
                    "login` or set GOOGLE_APPLICATION_CREDENTIALS"
                ) from exc
            project = self._project or default_project
        session = AuthorizedSession(credentials)
        # Headroom above the caller's threads: the library itself sends a few requests from
        # background threads (recent google-cloud-storage 3.x fetches bucket metadata for its
        # telemetry on first use of each bucket), which would otherwise overflow the pool.
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self._concurrency + _POOL_HEADROOM, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return storage.Client(project=project, credentials=credentials, _http=session)

    def close(self) -> None:
        """Release the HTTP connections (the object can still be used afterwards)."""
        with self._client_lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            client.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_retry(self, exc: BaseException) -> None:
        if self._counters is not None:
            self._counters.add("retries")
        logger.debug("storage: retrying after %s", _describe(exc))

    def _gcs_call(self, uri: str, action: str, fn: Callable[[], T], permission: str) -> T:
        """Run `fn` (which already retries with self._retry) and translate its errors."""
        try:
            return fn()
        except TrainerError:
            raise
        except api_exceptions.RetryError as exc:
            last = exc.cause if exc.cause is not None else exc
            raise StorageUnavailableError(
                f"{uri}: {action} kept failing for {self._deadline_s:g}s (last error: "
                f"{_describe(last)}); the object store is unavailable, retry later"
            ) from exc
        except Exception as exc:
            raise self._translate(exc, uri, action, permission) from exc

    def _translate(self, exc: Exception, uri: str, action: str, permission: str) -> Exception:
        bucket = split_gcs(uri)[0]
        status = _status_of(exc)
        if status == 404:
            return StorageNotFoundError(
                f"{uri}: not found while trying to {action} (check the path and that bucket "
                f"{bucket!r} exists)"
            )
        if status in (401, 403) or isinstance(exc, auth_exceptions.RefreshError):
            return StoragePermissionError(
                f"{uri}: permission denied on bucket {bucket!r} while trying to {action} "
                f"({_describe(exc)}); the credentials in use (Application Default Credentials /"
                f" the Workload Identity service account) need {permission} on that bucket"
            )
        if is_transient(exc):
            # A retryable error that ended the retry loop without a RetryError (should not
            # happen, but never report a transient failure as bad input).
            return StorageUnavailableError(
                f"{uri}: {action} failed ({_describe(exc)}); retry later"
            )
        if status is not None:
            return DataError(f"{uri}: GCS refused to {action} ({_describe(exc)})")
        return exc

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
            found = [
                os.path.join(dirpath, name)
                for dirpath, _, names in os.walk(root, followlinks=True)
                for name in names
                if wanted(name)
            ]
            return sorted(found)

        bucket, key = split_gcs(uri)
        # Directory semantics like a local path: gs://b/train lists train/..., not training/...
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def run() -> list[str]:
            blobs = self._client().list_blobs(
                bucket,
                prefix=prefix,
                page_size=self._list_page_size,
                retry=self._retry,
                timeout=self._timeout,
            )
            return sorted(
                f"{GCS_SCHEME}{bucket}/{blob.name}"
                for blob in blobs
                if not blob.name.endswith("/") and wanted(blob.name)
            )

        try:
            return self._gcs_call(uri, "list objects", run, "storage.objects.list")
        except StorageNotFoundError as exc:
            # Listing a prefix never 404s; only a missing bucket does.
            raise StorageNotFoundError(
                f"GCS bucket {bucket!r} does not exist (listing {uri}): check the bucket name"
            ) from exc

    def read(self, uri: str) -> bytes:
        """The whole object; truncated transfers are detected (length, checksum) and retried."""
        started = time.perf_counter()
        if not is_gcs(uri):
            data = _local(uri, "read", lambda: _read_file(uri))
        else:
            bucket, key = split_gcs(uri)
            session = self._client()._http
            url = (
                f"{self._endpoint}/download/storage/v1/b/{quote(bucket, safe='')}"
                f"/o/{quote(key, safe='')}?alt=media"
            )

            # One authorized GET of the JSON API's media endpoint per attempt, retried here
            # around whole downloads. `Blob.download_as_bytes` costs about 2 ms of CPU per
            # object, most of it holding the GIL, which caps a 2-core pipeline far below its
            # decode speed; and it resumes a broken download with a Range request whose 206
            # body it does not checksum. Every body returned here passed urllib3's
            # Content-Length check and crc32c against x-goog-hash.
            def download() -> bytes:
                response = session.get(url, timeout=self._timeout)
                if response.status_code != 200:
                    raise api_exceptions.from_http_response(response)
                data = response.content
                _verify_crc32c(data, response.headers.get("x-goog-hash", ""))
                return data

            data = self._gcs_call(
                uri,
                "read the object",
                self._retry(download),
                "storage.objects.get (roles/storage.objectViewer)",
            )
        self._count_fetch(len(data), started)
        return data

    def write(self, uri: str, data: bytes) -> None:
        """Write `data` atomically: readers see the old object or the new one, never a part."""
        if not is_gcs(uri):
            _local(uri, "write", lambda: _write_file(uri, data))
            return
        bucket, key = split_gcs(uri)
        blob = self._client().bucket(bucket).blob(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        # A GCS object appears only when its upload completes, so one upload is atomic. Retrying
        # a whole-object upload is safe here: we always write the complete content.
        self._gcs_call(
            uri,
            "write the object",
            lambda: blob.upload_from_string(
                data, content_type=content_type, retry=self._retry, timeout=self._timeout
            ),
            "storage.objects.create (roles/storage.objectCreator or objectAdmin)",
        )

    def exists(self, uri: str) -> bool:
        """True if `uri` is an object (or local file/directory) or a non-empty GCS prefix."""
        if not is_gcs(uri):
            return os.path.exists(uri)
        bucket, key = split_gcs(uri)
        client = self._client()

        def run() -> bool:
            if key and client.bucket(bucket).blob(key).exists(
                retry=self._retry, timeout=self._timeout
            ):
                return True
            prefix = key.rstrip("/") + "/" if key.strip("/") else ""
            blobs = client.list_blobs(
                bucket, prefix=prefix, max_results=1, retry=self._retry, timeout=self._timeout
            )
            return any(True for _ in blobs)

        try:
            return self._gcs_call(uri, "check the object", run, "storage.objects.get/list")
        except StorageNotFoundError:
            return False  # the bucket itself is missing

    def delete(self, uri: str) -> None:
        """Delete one object or local file; a missing one is fine."""
        if not is_gcs(uri):
            _local(uri, "delete", lambda: _remove_file(uri))
            return
        bucket, key = split_gcs(uri)
        blob = self._client().bucket(bucket).blob(key)
        with contextlib.suppress(StorageNotFoundError):
            self._gcs_call(
                uri,
                "delete the object",
                lambda: blob.delete(retry=self._retry, timeout=self._timeout),
                "storage.objects.delete (roles/storage.objectAdmin)",
            )

    def upload_dir(self, local_dir: str, uri: str) -> None:
        """Copy the tree under `local_dir` to `uri` (e.g. a SavedModel).

        For gs:// the files are uploaded in parallel, each atomically but not the tree as a
        whole: write a marker object after this returns if readers need to know it is complete.
        For a local destination the tree is copied beside it and renamed into place.
        """
        if not os.path.isdir(local_dir):
            raise StorageNotFoundError(f"{local_dir}: local directory does not exist")
        if not is_gcs(uri):
            _local(uri, "write", lambda: _replace_tree(local_dir, uri))
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
            _local(uri, "read", lambda: shutil.copytree(uri, local_dir, dirs_exist_ok=True))
            return
        bucket, key = split_gcs(uri)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        objects = self.list(uri)

        def download(obj: str) -> None:
            rel = obj[len(f"{GCS_SCHEME}{bucket}/{prefix}") :]
            self.write(os.path.join(local_dir, *rel.split("/")), self.read(obj))

        os.makedirs(local_dir, exist_ok=True)
        self._parallel(download, objects)

    def check_writable(self, uri: str) -> None:
        """Fail fast if `uri` (a directory / prefix) cannot be written: write and delete a probe."""
        probe = join(uri, f".streamtrain-write-probe-{uuid.uuid4().hex}")
        if not is_gcs(uri):
            _local(uri, "write", lambda: os.makedirs(uri, exist_ok=True))
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


def _local(path: str, action: str, fn: Callable[[], T]) -> T:
    """Run a local file operation, turning OS errors into one-line trainer errors."""
    try:
        return fn()
    except FileNotFoundError as exc:
        raise StorageNotFoundError(
            f"{path}: no such file or directory (trying to {action})"
        ) from exc
    except PermissionError as exc:
        raise StoragePermissionError(
            f"{path}: permission denied (trying to {action}); check the file's owner and mode"
        ) from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory, expected a file (trying to {action})") from exc
    except NotADirectoryError as exc:
        raise DataError(f"{path}: a parent is a file, not a directory ({action})") from exc


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_file(path: str, data: bytes) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # Temp file in the same directory so os.replace is an atomic rename on one filesystem.
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _replace_tree(src: str, dst: str) -> None:
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dst)}.")
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if os.path.isdir(dst):
            old = tmp + ".old"
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
