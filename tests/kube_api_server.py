"""A small Kubernetes API server for launcher tests: real JSON over HTTP, no cluster.

It stores Jobs, Pods, Services and Events, answers the calls the launcher makes (create,
get/list with label and field selectors, `?watch=true` newline-delimited event streams from a
resourceVersion, pods/log with `follow=true`) with the objects and `Status` errors the real
API server sends, so the real `kubernetes` client talks to it through a kubeconfig file.
Tests script the cluster's side (pods starting, logs, exit codes, conditions) with the helpers.

    with KubeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        api.on_job_created = lambda job: api.run_pod(job, index=0, logs=["hi"], exit_code=0)
        ...
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

TOKEN = "test-token"
RESOURCES = {
    # (api prefix, plural): (kind, apiVersion)
    ("/apis/batch/v1", "jobs"): ("Job", "batch/v1"),
    ("/api/v1", "pods"): ("Pod", "v1"),
    ("/api/v1", "services"): ("Service", "v1"),
    ("/api/v1", "events"): ("Event", "v1"),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A metav1.Status, as the API server sends with every error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


def field_value(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = (obj or {}).get(part)
    return obj


def matches(obj: dict[str, Any], *, labels: str | None, fields: str | None) -> bool:
    for term in filter(None, (labels or "").split(",")):
        key, _, value = term.partition("=")
        if (obj["metadata"].get("labels") or {}).get(key) != value:
            return False
    for term in filter(None, (fields or "").split(",")):
        key, _, value = term.partition("=")
        if field_value(obj, key) != value:
            return False
    return True


class KubeApiServer:
    """The server and the cluster state it serves; a context manager."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.resource_version = itertools.count(1000)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, plural, type, obj
        self.logs: dict[str, list[str]] = {}
        self.logs_closed: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        # Scenario knobs.
        self.token = TOKEN
        self.errors: dict[tuple[str, str], dict[str, Any]] = {}  # (method, plural) -> Status
        self.expire_watches: dict[str, int] = {}  # plural -> how many watches answer 410
        self.on_job_created: Callable[[dict[str, Any]], None] | None = None
        self.closed = False
        self.scenario_threads: list[threading.Thread] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> KubeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        for thread in self.scenario_threads:
            thread.join(5)
        self.httpd.shutdown()
        self.httpd.server_close()

    def write_kubeconfig(self, path: Path, *, server: str | None = None) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": server or self.url}}],
                    "users": [{"name": "test", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                    "current-context": "test",
                }
            )
        )
        return path

    # -- cluster state ------------------------------------------------------------------

    def _record(self, plural: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Stores obj with a new resourceVersion and wakes the watchers. Caller holds the lock."""
        rv = next(self.resource_version)
        obj["metadata"]["resourceVersion"] = str(rv)
        key = (plural, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.history.append((rv, plural, event_type, copy.deepcopy(obj)))
        self.changed.notify_all()
        return obj

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Creates or replaces an object (ADDED or MODIFIED)."""
        kind, api_version = next(v for (_, p), v in RESOURCES.items() if p == plural)
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        meta = obj["metadata"]
        meta.setdefault("namespace", "streamtrain")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        with self.changed:
            key = (plural, meta["namespace"], meta["name"])
            return self._record(plural, "MODIFIED" if key in self.objects else "ADDED", obj)

    def get(self, plural: str, name: str, namespace: str = "streamtrain") -> dict[str, Any]:
        with self.changed:
            return copy.deepcopy(self.objects[(plural, namespace, name)])

    def delete(self, plural: str, name: str, namespace: str = "streamtrain") -> None:
        with self.changed:
            obj = copy.deepcopy(self.objects[(plural, namespace, name)])
            self._record(plural, "DELETED", obj)

    def items(self, plural: str) -> list[dict[str, Any]]:
        with self.changed:
            return [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]

    # -- scenario helpers ---------------------------------------------------------------

    def start_scenario(self, fn: Callable[[], None]) -> None:
        thread = threading.Thread(target=fn, daemon=True)
        self.scenario_threads.append(thread)
        thread.start()

    def add_pod(self, job: dict[str, Any], *, index: int, status: dict[str, Any]) -> str:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{index}-{uuid.uuid4().hex[:5]}"
        labels = dict(template["metadata"].get("labels") or {})
        labels["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
        labels["job-name"] = job["metadata"]["name"]
        if job["spec"].get("completionMode") == "Indexed":
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
        self.put(
            "pods",
            {
                "metadata": {
                    "name": name,
                    "namespace": job["metadata"]["namespace"],
                    "labels": labels,
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": status,
            },
        )
        with self.changed:
            self.logs[name] = []
        return name

    def set_pod_status(self, name: str, status: dict[str, Any], namespace: str = "streamtrain"):
        pod = self.get("pods", name, namespace)
        pod["status"] = status
        self.put("pods", pod)

    def log(self, pod: str, *lines: str, close: bool = False) -> None:
        with self.changed:
            self.logs[pod].extend(lines)
            if close:
                self.logs_closed.add(pod)
            self.changed.notify_all()

    def add_event(self, pod: str, *, reason: str, message: str, type_: str = "Warning") -> None:
        self.put(
            "events",
            {
                "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:8]}", "namespace": "streamtrain"},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": "streamtrain"},
                "reason": reason,
                "message": message,
                "type": type_,
            },
        )

    def set_job_condition(self, name: str, type_: str, *, reason: str, message: str = ""):
        job = self.get("jobs", name)
        status = job.setdefault("status", {})
        status.setdefault("conditions", []).append(
            {
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now(),
            }
        )
        status["active"] = 0
        self.put("jobs", job)

    def run_pod(
        self,
        job: dict[str, Any],
        *,
        index: int,
        logs: list[str],
        exit_code: int,
        message: str = "",
        step_s: float = 0.05,
    ) -> str:
        """A pod's life: Pending, Running with logs, then terminated with exit_code."""
        name = self.add_pod(job, index=index, status=pending_status())
        time.sleep(step_s)
        self.set_pod_status(name, running_status(job))
        time.sleep(step_s)
        for line in logs:
            self.log(name, line)
            time.sleep(step_s / 5)
        self.log(name, close=True)
        self.set_pod_status(name, terminated_status(job, exit_code=exit_code, message=message))
        return name

    # -- HTTP ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Streams (watch, follow) use chunked transfer encoding, as the real server does:
            # the client hands each chunk over as it arrives.
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

        return Handler

    def _send_json(self, handler: BaseHTTPRequestHandler, code: int, body: dict[str, Any]):
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.changed:
            self.requests.append((method, handler.path))
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            self._send_json(handler, 401, status_body(401, "Unauthorized", "Unauthorized"))
            return
        route = self._route(url.path)
        if route is None:
            self._send_json(handler, 404, status_body(404, "NotFound", f"no route {url.path}"))
            return
        plural, namespace, name, sub = route
        error = self.errors.get((method, plural))
        if error:
            self._send_json(handler, error["code"], error)
            return
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            self._create(handler, plural, namespace, json.loads(handler.rfile.read(length)))
        elif sub == "log":
            self._stream_log(handler, name, follow=query.get("follow") == "true")
        elif name:
            try:
                self._send_json(handler, 200, self.get(plural, name, namespace))
            except KeyError:
                body = status_body(404, "NotFound", f'{plural} "{name}" not found', name=name)
                self._send_json(handler, 404, body)
        elif query.get("watch") in ("true", "1"):
            self._watch(handler, plural, namespace, query)
        else:
            self._list(handler, plural, namespace, query)

    @staticmethod
    def _route(path: str) -> tuple[str, str, str | None, str | None] | None:
        for (prefix, plural), _ in RESOURCES.items():
            head = f"{prefix}/namespaces/"
            if not path.startswith(head):
                continue
            parts = path[len(head) :].split("/")
            if len(parts) >= 2 and parts[1] == plural:
                name = parts[2] if len(parts) > 2 else None
                sub = parts[3] if len(parts) > 3 else None
                return plural, parts[0], name, sub
        return None

    def _create(self, handler, plural: str, namespace: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        kind = body.get("kind", plural)
        with self.changed:
            exists = (plural, namespace, name) in self.objects
        if exists:
            resource = "jobs.batch" if plural == "jobs" else plural
            message = f'{resource} "{name}" already exists'
            body_409 = status_body(409, "AlreadyExists", message, name=name, kind=plural)
            self._send_json(handler, 409, body_409)
            return
        body["metadata"]["namespace"] = namespace
        body.setdefault("status", {})
        created = self.put(plural, body)
        self._send_json(handler, 201, created)
        if kind == "Job" and self.on_job_created:
            callback = self.on_job_created
            self.start_scenario(lambda: callback(copy.deepcopy(created)))

    def _list(self, handler, plural: str, namespace: str, query: dict[str, str]) -> None:
        with self.changed:
            items = [
                copy.deepcopy(o)
                for (p, ns, _), o in self.objects.items()
                if p == plural
                and ns == namespace
                and matches(o, labels=query.get("labelSelector"), fields=query.get("fieldSelector"))
            ]
            rv = str(next(self.resource_version))
        kind, api_version = next(v for (_, p), v in RESOURCES.items() if p == plural)
        self._send_json(
            handler,
            200,
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _start_stream(self, handler, content_type: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

    @staticmethod
    def _chunk(handler, data: bytes) -> bool:
        """Writes one chunk (b"" ends the stream); False once the client has gone."""
        try:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()
        except OSError:
            return False
        return True

    def _watch(self, handler, plural: str, namespace: str, query: dict[str, str]) -> None:
        self._start_stream(handler, "application/json")
        with self.changed:
            expire = self.expire_watches.get(plural, 0)
            if expire and query.get("resourceVersion"):
                self.expire_watches[plural] = expire - 1
                gone = status_body(410, "Expired", "too old resource version")
                self._chunk(handler, json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                self._chunk(handler, b"")
                return
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        sent = 0
        while True:
            with self.changed:
                pending = [h for h in self.history[sent:] if h[0] > since]
                sent = len(self.history)
                if not pending:
                    remaining = deadline - time.monotonic()
                    if self.closed or remaining <= 0:
                        self._chunk(handler, b"")
                        return
                    self.changed.wait(min(remaining, 0.5))
                    continue
            for _, p, event_type, obj in pending:
                if p != plural or obj["metadata"]["namespace"] != namespace:
                    continue
                if not matches(
                    obj, labels=query.get("labelSelector"), fields=query.get("fieldSelector")
                ):
                    continue
                line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
                if not self._chunk(handler, line):
                    return

    def _stream_log(self, handler, pod: str, *, follow: bool) -> None:
        with self.changed:
            known = pod in self.logs
        if not known:
            self._send_json(handler, 404, status_body(404, "NotFound", f'pods "{pod}" not found'))
            return
        self._start_stream(handler, "text/plain")
        sent = 0
        while True:
            with self.changed:
                lines = self.logs[pod][sent:]
                sent += len(lines)
                done = pod in self.logs_closed or not follow or self.closed
                if not lines and not done:
                    self.changed.wait(0.5)
                    continue
            if lines and not self._chunk(handler, "".join(f"{x}\n" for x in lines).encode()):
                return
            if done and not lines:
                self._chunk(handler, b"")
                return


# -- pod statuses as the kubelet reports them ------------------------------------------------


def container_status(job: dict[str, Any] | None, state: dict[str, Any]) -> dict[str, Any]:
    image = job["spec"]["template"]["spec"]["containers"][0]["image"] if job else "unknown"
    return {
        "name": "trainer",
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def pending_status() -> dict[str, Any]:
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}


def unschedulable_status(message: str) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": now(),
            }
        ],
    }


def waiting_status(job: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [container_status(job, state)],
    }


def running_status(job: dict[str, Any]) -> dict[str, Any]:
    state = {"running": {"startedAt": now()}}
    return {"phase": "Running", "containerStatuses": [container_status(job, state)]}


def terminated_status(job: dict[str, Any], *, exit_code: int, message: str = "") -> dict[str, Any]:
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": now(),
            "finishedAt": now(),
        }
    }
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [container_status(job, state)],
    }
