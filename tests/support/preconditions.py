"""A reverse proxy that enforces GCS's ifGenerationMatch in front of gcp-storage-emulator.

The emulator ignores the ifGenerationMatch query parameter (it writes and deletes
unconditionally), so the output lease's generation-matched writes are tested through this
proxy: a request carrying the parameter is checked against the object's current generation,
which the proxy asks the emulator for, and answered 412 like GCS when it differs; otherwise it
is forwarded. Conditional requests are handled one at a time, so check and write are atomic.

    with GenerationMatchProxy(emulator_url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests

_OBJECT = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
_NAME_IN_BODY = re.compile(rb'"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


class GenerationMatchProxy:
    """Forwards to `upstream`; answers 412 when ifGenerationMatch differs from the object's."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.precondition_failures = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GenerationMatchProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def generation(self, bucket: str, name: str) -> int:
        url = f"{self.upstream}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
        response = requests.get(url, timeout=10)
        return int(response.json()["generation"]) if response.status_code == 200 else 0

    def target(self, method: str, path: str, body: bytes) -> tuple[str, str] | None:
        """(bucket, object name) a conditional request is about, None if unconditional."""
        if "ifGenerationMatch" not in parse_qs(urlsplit(path).query):
            return None
        route = urlsplit(path).path
        if match := _OBJECT.match(route):
            return match["bucket"], unquote(match["name"])
        if method == "POST" and (match := _UPLOAD.match(route)):
            query = parse_qs(urlsplit(path).query)
            if "name" in query:
                return match["bucket"], query["name"][0]
            found = _NAME_IN_BODY.search(body)
            if found:
                return match["bucket"], json.loads(found.group(1))
        return None


def _handler(proxy: GenerationMatchProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = proxy.target(self.command, self.path, body)
            if target is None:
                self._forward(body)
                return
            wanted = int(parse_qs(urlsplit(self.path).query)["ifGenerationMatch"][0])
            with proxy._lock:
                if proxy.generation(*target) != wanted:
                    proxy.precondition_failures += 1
                    self._answer(412, b'{"error": {"code": 412, "message": "conditionNotMet"}}')
                    return
                self._forward(body)

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self, body: bytes) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP}
            response = requests.request(
                self.command,
                proxy.upstream + self.path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=30,
            )
            kept = {k: v for k, v in response.headers.items() if k.lower() not in _SKIP}
            kept.pop("Content-Encoding", None)  # requests decoded the body
            self._answer(response.status_code, response.content, kept)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler
