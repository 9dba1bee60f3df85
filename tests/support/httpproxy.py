"""A threaded HTTP reverse proxy that adds latency and injects faults, for tests and benchmarks.

It sits between a client (the GCS library) and one or more upstream servers (gcp-storage-emulator
processes), forwarding every request unchanged and, at configurable rates, answering 503 or 429,
resetting the connection, truncating the body, or stalling past the client's timeout. The emulator
serves one request at a time, so the benchmark runs several emulators and the proxy spreads
requests over them round-robin.

    with FaultProxy(upstreams=["http://127.0.0.1:9023"], latency_ms=50, status_503=0.1,
                    only_paths=r"alt=media", seed=1) as proxy:
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.url
        ...
        proxy.configure(status_503=0.0)  # options change at runtime
        proxy.stats()  # {"requests": 120, "forwarded": 108, "status_503": 12, ...}

Fault kinds (each a probability in [0, 1], drawn once per request from one seeded RNG):
  status_503 / status_429  answer that status with a small JSON error body, upstream not called
  reset                    close the socket with RST without answering
  truncate                 forward, then send the full Content-Length but only half of the body
                           and close the connection cleanly (with `truncate_length=False`: no
                           Content-Length, a close-delimited half body that only a checksum
                           can catch)
  stall                    sleep `stall_s` seconds (longer than the client's timeout), then close
Only requests whose path+query matches `only_paths` (a regex, searched) are faulted; latency
applies to every request. `max_faults` caps the total number of injected faults, which makes
"the first N matching requests fail" tests deterministic.

A fixed answer, for permission tests: every request whose "METHOD path?query" matches
`answer_paths` (a regex, searched) gets `answer_status` (default 403) with the JSON error body,
without a draw and without calling the upstream; counted as "answered", not as a fault.

    proxy.configure(answer_paths=r"^GET /storage/v1/b/secret-bucket/o", answer_status=403)
"""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import json
import logging
import random
import re
import socket
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

FAULT_KINDS = ("status_503", "status_429", "reset", "truncate", "stall")

# Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded;
# Content-Length is set by the proxy for the body it sends.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class _Options:
    """The proxy's runtime-changeable options; read and written under the proxy's lock."""

    def __init__(self) -> None:
        self.latency_ms = 0.0
        self.status_503 = 0.0
        self.status_429 = 0.0
        self.reset = 0.0
        self.truncate = 0.0
        self.stall = 0.0
        self.stall_s = 30.0
        self.truncate_length = True
        self.only_paths: re.Pattern[str] | None = None
        self.max_faults: int | None = None
        self.answer_status = 403
        self.answer_paths: re.Pattern[str] | None = None
        self.hold_bodies_after: int | None = None


class FaultProxy:
    """Reverse proxy on 127.0.0.1 with latency and fault injection; see the module docstring.

    Keyword options (all changeable later with `configure`):
      latency_ms   added before every request is handled
      status_503, status_429, reset, truncate, stall   fault probabilities (sum ≤ 1)
      stall_s      how long a stalled request hangs before its socket is closed
      truncate_length  whether a truncated response still announces the full Content-Length
      only_paths   regex searched in "path?query"; only matching requests are faulted
      max_faults   stop injecting after this many faults in total (None: no cap)
      answer_paths regex searched in "METHOD path?query"; matching requests get answer_status
      answer_status  the status answered to them (default 403), upstream not called
      hold_bodies_after  relayed bodies pause once this many bytes are out, until it is set
                   back to None (a download caught half way, deterministically)
    `seed` makes the sequence of fault draws reproducible; `max_workers` bounds the threads that
    serve connections (one per open keep-alive connection), `idle_timeout_s` closes idle ones;
    `recent_size` bounds the log of request lines that `recent_requests()` returns.
    """

    def __init__(
        self,
        *,
        upstreams: Sequence[str],
        port: int = 0,
        seed: int | None = None,
        max_workers: int = 128,
        upstream_timeout_s: float = 60.0,
        idle_timeout_s: float = 30.0,
        recent_size: int = 1000,
        **options: Any,
    ) -> None:
        if not upstreams:
            raise ValueError("FaultProxy needs at least one upstream URL")
        self._upstreams = [u.rstrip("/") for u in upstreams]
        self._next_upstream = itertools.cycle(self._upstreams)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._options = _Options()
        self._stats: dict[str, int] = dict.fromkeys(
            ("requests", "forwarded", "upstream_errors", "answered", *FAULT_KINDS), 0
        )
        self._faults_injected = 0
        # The latest request lines ("GET /path?query"), bounded, for tests that check what
        # the client sent.
        self._recent: collections.deque[str] = collections.deque(maxlen=recent_size)
        self._stopping = threading.Event()
        self._upstream_timeout_s = upstream_timeout_s
        # One pooled requests.Session per serving thread: Session objects are not documented as
        # thread-safe, and a per-thread session keeps each upstream keep-alive connection reused.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self.configure(**options)

        handler = _make_handler(self, idle_timeout_s)
        self._server = _PooledHTTPServer(("127.0.0.1", port), handler, max_workers=max_workers)
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="fault-proxy",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, wake stalled handlers, and release sockets and sessions."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- options and stats -----------------------------------------------------------------

    def configure(self, **options: Any) -> None:
        """Change options at runtime, e.g. `proxy.configure(status_503=0.0, latency_ms=10)`."""
        with self._lock:
            updated = copy.copy(self._options)
            for name, value in options.items():
                if not hasattr(updated, name):
                    raise TypeError(f"FaultProxy has no option {name!r}")
                if name in FAULT_KINDS and not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"FaultProxy option {name}={value} is not a rate in [0, 1]")
                if name in ("only_paths", "answer_paths") and value is not None:
                    value = re.compile(value)  # noqa: PLW2901
                if name == "answer_status" and not 100 <= int(value) <= 599:
                    raise ValueError(f"FaultProxy option answer_status={value} is not a status")
                setattr(updated, name, value)
            total = sum(getattr(updated, kind) for kind in FAULT_KINDS)
            if total > 1.0 + 1e-9:
                raise ValueError(f"FaultProxy fault rates add up to {total} > 1")
            self._options = updated  # all or nothing

    def stats(self) -> dict[str, int]:
        """Counts of requests seen, forwarded, upstream errors and injected faults per kind."""
        with self._lock:
            return dict(self._stats)

    def recent_requests(self) -> list[str]:
        """The latest request lines seen, oldest first, e.g. ["GET /storage/v1/b/x/o?..."]."""
        with self._lock:
            return list(self._recent)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(self._stats, 0)
            self._faults_injected = 0
            self._recent.clear()

    # --- used by the handler ---------------------------------------------------------------

    def _plan(self, method: str, target: str) -> tuple[float, str | int | None, float, str, bool]:
        """Latency, fault kind (or a fixed status, or None), stall duration, upstream,
        truncate_length."""
        with self._lock:
            opts = self._options
            self._stats["requests"] += 1
            self._recent.append(f"{method} {target}")
            if opts.answer_paths is not None and opts.answer_paths.search(f"{method} {target}"):
                self._stats["answered"] += 1
                return opts.latency_ms / 1000.0, opts.answer_status, 0.0, "", True
            fault = None
            capped = opts.max_faults is not None and self._faults_injected >= opts.max_faults
            if not capped and (opts.only_paths is None or opts.only_paths.search(target)):
                draw = self._rng.random()
                edge = 0.0
                for kind in FAULT_KINDS:
                    edge += getattr(opts, kind)
                    if draw < edge:
                        fault = kind
                        break
            if fault is not None:
                self._stats[fault] += 1
                self._faults_injected += 1
            upstream = next(self._next_upstream)
            return (
                opts.latency_ms / 1000.0,
                fault,
                opts.stall_s,
                upstream,
                opts.truncate_length,
            )

    def _hold(self, sent: int) -> None:
        """Wait while `hold_bodies_after` is set and `sent` bytes have reached it."""
        while True:
            with self._lock:
                at = self._options.hold_bodies_after
            if at is None or sent < at or self._stopping.wait(0.02):
                return

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Forward the client's headers only, not requests' defaults (Accept-Encoding: gzip
            # would change what the upstream sends back).
            session.headers.clear()
            session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=4))
            session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=4))
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session


class _PooledHTTPServer(HTTPServer):
    """HTTPServer that serves connections on a bounded thread pool instead of a thread each.

    It remembers open connections so that closing the server also ends idle keep-alive
    connections; otherwise their worker threads would wait out the idle timeout and hold up
    interpreter exit (ThreadPoolExecutor joins its threads at exit).
    """

    def __init__(self, address: tuple[str, int], handler: type, *, max_workers: int) -> None:
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fault-proxy")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        self._pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-response all the time here (that is the point); don't print
        # tracebacks to stderr the way socketserver does.
        logger.debug("fault proxy: connection from %s ended with an error", client_address)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading the next request
        self._pool.shutdown(wait=False, cancel_futures=True)


def _make_handler(proxy: FaultProxy, idle_timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real object store
        timeout = idle_timeout_s  # an idle keep-alive connection frees its worker thread

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("fault proxy: " + format, *args)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _abort(self) -> None:
            # SO_LINGER with a zero timeout makes close() send RST: a "connection reset by peer".
            self.close_connection = True
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            except OSError:
                pass

        def _send_error_status(self, status: int) -> None:
            body = json.dumps(
                {"error": {"code": status, "message": f"injected by FaultProxy: {status}"}}
            ).encode()
            if self.command == "HEAD":
                body = b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            body = self._read_body()
            latency_s, fault, stall_s, upstream, keep_length = proxy._plan(self.command, self.path)
            if latency_s > 0 and proxy._stopping.wait(latency_s):
                self._abort()
            elif isinstance(fault, int):
                self._send_error_status(fault)
            elif fault in ("status_503", "status_429"):
                self._send_error_status(int(fault[-3:]))
            elif fault == "reset":
                self._abort()
            elif fault == "stall":
                proxy._stopping.wait(stall_s)
                self._abort()
            else:
                self._forward(body, upstream, truncate=fault == "truncate", keep_length=keep_length)

        def _forward(
            self, body: bytes, upstream: str, *, truncate: bool, keep_length: bool
        ) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                resp = proxy._session().request(
                    self.command,
                    upstream + self.path,
                    headers=headers,
                    data=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                    stream=True,
                    allow_redirects=False,
                    timeout=proxy._upstream_timeout_s,
                )
                length = resp.headers.get("Content-Length")
                # Raw bytes, not decoded: the client gets exactly what the upstream sent. A
                # body of known length is relayed as it arrives (a MiB at a time), like a
                # real endpoint; a truncated one is read whole first, to cut it in half.
                streamed = length is not None and not truncate and self.command != "HEAD"
                content = b"" if streamed else resp.raw.read(decode_content=False)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                proxy._count("upstream_errors")
                logger.warning("fault proxy: upstream %s failed: %s", upstream, exc)
                self._send_error_status(502)
                return
            proxy._count("forwarded")

            with resp:
                self.send_response_only(resp.status_code, resp.reason)
                for name, value in resp.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                if truncate:
                    # The full length is announced (unless told not to) so the client can
                    # notice the short body; the connection then ends with a clean FIN, like a
                    # server or load balancer that gave up mid-body.
                    if keep_length:
                        self.send_header("Content-Length", str(len(content)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(content[: len(content) // 2])
                    self.close_connection = True
                    return
                self.send_header("Content-Length", length if streamed else str(len(content)))
                self.end_headers()
                if not streamed:
                    if self.command != "HEAD":
                        self.wfile.write(content)
                    return
                sent = 0
                try:
                    while chunk := resp.raw.read(1 << 20, decode_content=False):
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        proxy._hold(sent)
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    # Headers are out: all the proxy can do is end the connection early.
                    logger.warning("fault proxy: upstream %s broke mid-body: %s", upstream, exc)
                    self.close_connection = True

        # BaseHTTPRequestHandler dispatches on do_<METHOD>.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler
