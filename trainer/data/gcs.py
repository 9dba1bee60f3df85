"""The google-cloud-storage connection: one client, its pool, retries and error translation.

GCS goes through google-cloud-storage with Application Default Credentials (Workload Identity in
the cluster). With STORAGE_EMULATOR_HOST set (tests, benchmarks) the library talks to that URL
instead; we then use anonymous credentials and a fixed project so no ADC lookup happens. The
variable is read when the first call creates the client.

Every call retries 408/429/5xx, connection resets, timeouts and truncated bodies with the
library's exponential backoff with jitter (`google.api_core.retry.Retry`), bounded by
`deadline_s`. Past the deadline it raises StorageUnavailableError (exit code 5: retry later); a
missing object or bucket raises StorageNotFoundError, a refused one StoragePermissionError.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

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


def crc32c_of(goog_hash: str) -> int | None:
    """The crc32c in an x-goog-hash header ("crc32c=...,md5=..."), None when it has none."""
    for part in goog_hash.split(","):
        name, _, value = part.strip().partition("=")
        if name == "crc32c" and value:
            return int.from_bytes(base64.b64decode(value), "big")
    return None


def verify_crc32c(data: bytes, goog_hash: str) -> None:
    """Raise a retryable error when the body's crc32c differs from the server's x-goog-hash."""
    expected = crc32c_of(goog_hash)
    if expected is not None and google_crc32c.value(data) != expected:
        raise ConnectionError(
            f"crc32c mismatch: got {len(data)} bytes that do not match x-goog-hash"
        )


def describe(exc: BaseException) -> str:
    """A short one-line description of an exception for user-facing messages."""
    status = _status_of(exc)
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if status is not None:
        return f"HTTP {status}: {text}"
    return f"{type(exc).__name__}: {text}"


class GcsConnection:
    """The shared client, created on first use, with the retry policy every call runs under.

    `concurrency` sizes the HTTP connection pool; `deadline_s` bounds the retries of one call
    (api_core gives up as soon as the next backoff would end past it, so a call takes at most
    about deadline_s + request_timeout_s), `request_timeout_s` one HTTP request.
    """

    def __init__(
        self,
        *,
        concurrency: int = 32,
        deadline_s: float = 60.0,
        request_timeout_s: float = 20.0,
        counters: Counters | None = None,
        project: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"storage concurrency must be ≥ 1, got {concurrency}")
        self.concurrency = concurrency
        self._deadline_s = deadline_s
        self.timeout = (request_timeout_s, request_timeout_s)
        self.endpoint = ""  # set with the client
        self._counters = counters
        self._project = project
        self._client_lock = threading.Lock()
        self._client_obj: Any = None
        # Backoff: 0.2 s doubling to 8 s, each sleep drawn uniformly from [0, 2×delay] by
        # api_core (jitter), until `deadline_s` has passed.
        self.retry = Retry(
            predicate=is_transient,
            initial=0.2,
            maximum=8.0,
            multiplier=2.0,
            timeout=deadline_s,
            on_error=self._on_retry,
        )

    # --- client ----------------------------------------------------------------------------

    def client(self) -> Any:
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
        self.endpoint = (
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
            pool_connections=4, pool_maxsize=self.concurrency + _POOL_HEADROOM, max_retries=0
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

    def _on_retry(self, exc: BaseException) -> None:
        if self._counters is not None:
            self._counters.add("retries")
        logger.debug("storage: retrying after %s", describe(exc))

    def call(self, uri: str, action: str, fn: Callable[[], T], permission: str) -> T:
        """Run `fn` (which already retries with `self.retry`) and translate its errors."""
        try:
            return fn()
        except TrainerError:
            raise
        except api_exceptions.RetryError as exc:
            last = exc.cause if exc.cause is not None else exc
            raise StorageUnavailableError(
                f"{uri}: {action} kept failing for {self._deadline_s:g}s (last error: "
                f"{describe(last)}); the object store is unavailable, retry later"
            ) from exc
        except Exception as exc:
            raise self.translate(exc, uri, action, permission) from exc

    def translate(self, exc: Exception, uri: str, action: str, permission: str) -> Exception:
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
                f"({describe(exc)}); the credentials in use (Application Default Credentials /"
                f" the Workload Identity service account) need {permission} on that bucket"
            )
        if is_transient(exc):
            # A retryable error that ended the retry loop without a RetryError (should not
            # happen, but never report a transient failure as bad input).
            return StorageUnavailableError(f"{uri}: {action} failed ({describe(exc)}); retry later")
        if status is not None:
            return DataError(f"{uri}: GCS refused to {action} ({describe(exc)})")
        return exc
