"""support.httpproxy.FaultProxy in front of small real HTTP servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from support.httpproxy import FaultProxy


def _upstream(name: str) -> ThreadingHTTPServer:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            got = self.rfile.read(length) if length else b""
            body = f"{name} {self.command} {self.path} ".encode() + got
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Seen-Host", self.headers.get("Host", ""))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _reply

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serve.daemon = True
    serve.start()
    return server


@pytest.fixture
def upstreams() -> Iterator[list[str]]:
    servers = [_upstream("a"), _upstream("b")]
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def test_forwards_method_path_body_and_round_robins(upstreams):
    with FaultProxy(upstreams=upstreams) as proxy, requests.Session() as session:
        r1 = session.post(f"{proxy.url}/x/y?q=1", data=b"payload", timeout=5)
        r2 = session.get(f"{proxy.url}/z", timeout=5)
        assert r1.status_code == 200 and r1.content == b"a POST /x/y?q=1 payload"
        assert r2.content == b"b GET /z "
        assert r1.headers["X-Seen-Host"] == upstreams[0].removeprefix("http://")
        assert proxy.stats()["forwarded"] == 2
        assert proxy.recent_requests() == ["POST /x/y?q=1", "GET /z"]


def test_faults_only_on_matching_paths_and_counted(upstreams):
    with FaultProxy(upstreams=upstreams[:1], status_503=1.0, only_paths=r"alt=media") as proxy:
        assert requests.get(f"{proxy.url}/list", timeout=5).status_code == 200
        assert requests.get(f"{proxy.url}/o?alt=media", timeout=5).status_code == 503
        proxy.configure(status_503=0.0, status_429=1.0)
        assert requests.get(f"{proxy.url}/o?alt=media", timeout=5).status_code == 429
        proxy.configure(status_429=0.0, reset=1.0)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.url}/o?alt=media", timeout=5)
        proxy.configure(reset=0.0, truncate=1.0)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(f"{proxy.url}/o?alt=media", timeout=5)
        proxy.configure(truncate=0.0, stall=1.0, stall_s=5)
        with pytest.raises(requests.Timeout):
            requests.get(f"{proxy.url}/o?alt=media", timeout=0.3)
        stats = proxy.stats()
    assert stats["requests"] == 6 and stats["forwarded"] == 2  # /list and the truncated one
    assert [stats[k] for k in ("status_503", "status_429", "reset", "truncate", "stall")] == [1] * 5


def test_seed_makes_faults_reproducible_and_max_faults_caps(upstreams):
    def pattern(seed: int) -> list[int]:
        with FaultProxy(upstreams=upstreams[:1], status_503=0.5, seed=seed) as proxy:
            return [requests.get(f"{proxy.url}/", timeout=5).status_code for _ in range(20)]

    first = pattern(7)
    assert first == pattern(7)
    assert 503 in first and 200 in first
    with FaultProxy(upstreams=upstreams[:1], status_503=1.0, max_faults=2) as proxy:
        codes = [requests.get(f"{proxy.url}/", timeout=5).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]


def test_latency_is_added_and_close_wakes_stalled_requests(upstreams):
    with FaultProxy(upstreams=upstreams[:1], latency_ms=200) as proxy:
        started = time.monotonic()
        requests.get(f"{proxy.url}/", timeout=5)
        assert time.monotonic() - started >= 0.2  # a lower bound, not a speed assertion

    proxy = FaultProxy(upstreams=upstreams[:1], stall=1.0, stall_s=60).start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            requests.get(f"{proxy.url}/", timeout=30)
        except requests.RequestException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while proxy.stats()["stall"] == 0:
        time.sleep(0.01)
    proxy.close()
    caller.join(timeout=10)
    assert not caller.is_alive() and errors  # the stalled request ended when the proxy closed


def test_close_ends_idle_keep_alive_connections(upstreams):
    # Worker threads blocked on an idle keep-alive connection would otherwise hold up
    # interpreter exit for idle_timeout_s.
    proxy = FaultProxy(upstreams=upstreams[:1], idle_timeout_s=60).start()
    with requests.Session() as session:
        assert session.get(f"{proxy.url}/", timeout=5).ok  # the connection stays open
        workers = [t for t in threading.enumerate() if t.name.startswith("fault-proxy_")]
        assert workers
        proxy.close()
        for worker in workers:
            worker.join(timeout=10)
        assert not [t for t in workers if t.is_alive()]


def test_rejects_bad_options(upstreams):
    with pytest.raises(ValueError, match="rate"):
        FaultProxy(upstreams=upstreams, reset=1.5)
    with pytest.raises(ValueError, match="add up"):
        FaultProxy(upstreams=upstreams, reset=0.6, truncate=0.6)
    with pytest.raises(TypeError, match="bogus"):
        FaultProxy(upstreams=upstreams, bogus=1)


def test_answer_paths_get_a_fixed_status_without_reaching_the_upstream(upstreams):
    with FaultProxy(
        upstreams=upstreams[:1], status_503=1.0, answer_paths=r"^GET /b/locked/", seed=0
    ) as proxy:
        denied = requests.get(f"{proxy.url}/b/locked/o?alt=media", timeout=5)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == 403
        proxy.configure(status_503=0.0, answer_status=401)
        assert requests.get(f"{proxy.url}/b/locked/x", timeout=5).status_code == 401
        assert requests.post(f"{proxy.url}/b/locked/x", timeout=5).status_code == 200
        proxy.configure(answer_paths=r"^HEAD ")
        head = requests.head(f"{proxy.url}/b/locked/x", timeout=5)
        assert head.status_code == 401 and head.content == b""
        proxy.configure(answer_paths=None)
        assert requests.get(f"{proxy.url}/b/locked/x", timeout=5).status_code == 200
        stats = proxy.stats()
    assert stats["answered"] == 3 and stats["status_503"] == 0 and stats["forwarded"] == 2
    with pytest.raises(ValueError, match="answer_status"):
        FaultProxy(upstreams=upstreams, answer_status=42)
