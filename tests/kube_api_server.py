"""A small Kubernetes API server for launcher tests: real JSON over HTTP, no cluster.

It stores Jobs, Pods, Services, Events and two custom resources, JobSets
(jobset.x-k8s.io/v1alpha2) and Kueue Workloads (kueue.x-k8s.io, served as v1beta2 and v1beta1
from one store, as a CRD with two served versions is), and answers the calls the launcher
makes (create, get/list with label and field selectors, `?watch=true` newline-delimited event
streams from a resourceVersion, pods/log with `follow=true`, API group discovery under /apis)
with the objects and `Status` errors the real API server sends, so the real `kubernetes`
client talks to it through a kubeconfig file. `served` says which custom API versions this
cluster has (a group left out answers 404, as on a cluster without that CRD). Tests script the
cluster's side (pods starting, logs, exit codes, conditions; what the JobSet controller and
Kueue would write) with the helpers.

    with KubeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        api.on_job_created = lambda job: api.run_pod(job, index=0, logs=["hi"], exit_code=0)
        api.served["kueue.x-k8s.io"] = ["v1beta1"]  # an older Kueue
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
    # (api prefix, plural): (kind, apiVersion); the first entry of a plural is its storage.
    ("/apis/batch/v1", "jobs"): ("Job", "batch/v1"),
    ("/api/v1", "pods"): ("Pod", "v1"),
    ("/api/v1", "services"): ("Service", "v1"),
    ("/api/v1", "events"): ("Event", "v1"),
    ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets"): ("JobSet", "jobset.x-k8s.io/v1alpha2"),
    ("/apis/kueue.x-k8s.io/v1beta2", "workloads"): ("Workload", "kueue.x-k8s.io/v1beta2"),
    ("/apis/kueue.x-k8s.io/v1beta1", "workloads"): ("Workload", "kueue.x-k8s.io/v1beta1"),
}
BUILTIN_GROUPS = {"batch": ["v1"]}
# What the real server answers for a path no served API has (e.g. a CRD not installed).
NOT_FOUND = "the server could not find the requested resource"
JOBSET_PREFIX = "jobset.sigs.k8s.io/"


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


def storage_version(plural: str) -> tuple[str, str]:
    """(kind, apiVersion) objects of `plural` are stored as."""
    return next(v for (_, p), v in RESOURCES.items() if p == plural)


def served_as(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """`obj` as the API version it is asked for (conversion between the served versions of a
    custom resource changes only apiVersion for the fields used here)."""
    return {**obj, "apiVersion": api_version}


def without_type_meta(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind")}


def group_of(prefix: str) -> tuple[str, str] | None:
    """("group", "version") of an /apis/GROUP/VERSION prefix; None for the core API."""
    parts = prefix.strip("/").split("/")
    return (parts[1], parts[2]) if parts[0] == "apis" else None


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
        self.watch_lag_s: dict[str, float] = {}  # plural -> delay before each watch event
        # Custom API groups installed in this cluster and the versions served, newest first.
        self.served: dict[str, list[str]] = {
            "jobset.x-k8s.io": ["v1alpha2"],
            "kueue.x-k8s.io": ["v1beta2", "v1beta1"],
        }
        self.on_job_created: Callable[[dict[str, Any]], None] | None = None
        self.on_jobset_created: Callable[[dict[str, Any]], None] | None = None
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
        kind, api_version = storage_version(plural)
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
        spec = copy.deepcopy(template["spec"])
        if job["spec"].get("completionMode") == "Indexed":
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            # The Job controller names an Indexed Job's pod host after the Job and index.
            spec["hostname"] = f"{job['metadata']['name']}-{index}"
        self.put(
            "pods",
            {
                "metadata": {
                    "name": name,
                    "namespace": job["metadata"]["namespace"],
                    "labels": labels,
                },
                "spec": spec,
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

    # -- what the JobSet controller and Kueue would do -----------------------------------

    def jobset_child_job(
        self, jobset: dict[str, Any], *, replicated_job: str = "workers", index: int = 0
    ) -> dict[str, Any]:
        """Creates the Job the JobSet controller makes for a replicated Job: named
        <jobset>-<replicatedJob>-<index>, owned by the JobSet, labelled and annotated (pod
        template too) with jobset.sigs.k8s.io/*, pods in the JobSet's subdomain."""
        jobset = self.get("jobsets", jobset["metadata"]["name"], jobset["metadata"]["namespace"])
        meta, spec = jobset["metadata"], jobset["spec"]
        (rjob,) = [r for r in spec["replicatedJobs"] if r["name"] == replicated_job]
        template = copy.deepcopy(rjob["template"])
        replicas = str(rjob.get("replicas", 1))
        marks = {
            JOBSET_PREFIX + "jobset-name": meta["name"],
            JOBSET_PREFIX + "jobset-uid": meta["uid"],
            JOBSET_PREFIX + "replicatedjob-name": replicated_job,
            JOBSET_PREFIX + "restart-attempt": str((jobset.get("status") or {}).get("restarts", 0)),
            JOBSET_PREFIX + "replicatedjob-replicas": replicas,
            JOBSET_PREFIX + "job-index": str(index),
            JOBSET_PREFIX + "job-global-index": str(index),
        }
        job_spec = template["spec"]
        pod_meta = job_spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **marks}
        pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **marks}
        job_spec["template"]["spec"]["subdomain"] = (spec.get("network") or {}).get(
            "subdomain"
        ) or meta["name"]
        job_spec["suspend"] = bool(spec.get("suspend"))
        job = {
            "metadata": {
                "name": f"{meta['name']}-{replicated_job}-{index}",
                "namespace": meta["namespace"],
                "labels": {**((template.get("metadata") or {}).get("labels") or {}), **marks},
                "annotations": dict(marks),
                "ownerReferences": [
                    {
                        "apiVersion": "jobset.x-k8s.io/v1alpha2",
                        "kind": "JobSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": job_spec,
            "status": {},
        }
        return self.put("jobs", job)

    @staticmethod
    def _with_condition(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        status = obj.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c["type"] != type_]
        conditions.append(
            {
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now(),
                "observedGeneration": 1,
            }
        )
        status["conditions"] = conditions

    def set_jobset_condition(self, name: str, type_: str, *, reason: str, message: str = ""):
        """A JobSet condition (metav1.Condition); Completed and Failed also set terminalState."""
        jobset = self.get("jobsets", name)
        self._with_condition(jobset, type_, reason, message)
        if type_ in ("Completed", "Failed"):
            jobset["status"]["terminalState"] = type_
        self.put("jobsets", jobset)

    def restart_jobset(self, name: str, *, rule: str, message: str, counted: bool) -> None:
        """A JobSet restart, as the controller writes it in one status update: restarts += 1
        (and restartsCountTowardsMax if `counted`) with the RestartingJobSet condition; then
        the child Jobs and their pods deleted."""
        jobset = self.get("jobsets", name)
        status = jobset.setdefault("status", {})
        status["restarts"] = int(status.get("restarts") or 0) + 1
        if counted:
            status["restartsCountTowardsMax"] = int(status.get("restartsCountTowardsMax") or 0) + 1
        self._with_condition(jobset, "RestartingJobSet", f"FailurePolicy_{rule}", message)
        self.put("jobsets", jobset)
        selector = f"{JOBSET_PREFIX}jobset-name={name}"
        for plural in ("pods", "jobs"):
            for obj in self.items(plural):
                if matches(obj, labels=selector, fields=None):
                    self.delete(plural, obj["metadata"]["name"], obj["metadata"]["namespace"])

    def add_workload(
        self,
        owner: dict[str, Any],
        *,
        conditions: list[dict[str, Any]],
        admission_checks: list[dict[str, Any]] | None = None,
        pods: int = 1,
    ) -> dict[str, Any]:
        """The Workload Kueue creates for a queued Job or JobSet (owned by it)."""
        owner = self.get(f"{owner['kind'].lower()}s", owner["metadata"]["name"])
        meta = owner["metadata"]
        status: dict[str, Any] = {"conditions": conditions}
        if admission_checks:
            status["admissionChecks"] = admission_checks
        workload = {
            "metadata": {
                "name": f"{owner['kind'].lower()}-{meta['name']}-{meta['uid'][:5]}",
                "namespace": meta["namespace"],
                "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "queueName": (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name"),
                "podSets": [{"name": "main", "count": pods}],
            },
            "status": status,
        }
        return self.put("workloads", workload)

    def set_workload_status(
        self,
        name: str,
        *,
        conditions: list[dict[str, Any]],
        admission_checks: list[dict[str, Any]] | None = None,
    ) -> None:
        workload = self.get("workloads", name)
        workload["status"] = {"conditions": conditions}
        if admission_checks:
            workload["status"]["admissionChecks"] = admission_checks
        self.put("workloads", workload)

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
        if method == "GET" and self._discovery(handler, url.path):
            return
        route = self._route(url.path)
        if route is None:
            self._send_json(handler, 404, status_body(404, "NotFound", NOT_FOUND))
            return
        prefix, plural, namespace, name, sub = route
        api_version = RESOURCES[(prefix, plural)][1]
        error = self.errors.get((method, plural))
        if error:
            self._send_json(handler, error["code"], error)
            return
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            body = json.loads(handler.rfile.read(length))
            self._create(handler, plural, namespace, body, api_version)
        elif sub == "log":
            self._stream_log(handler, name, follow=query.get("follow") == "true")
        elif name:
            try:
                self._send_json(
                    handler, 200, served_as(self.get(plural, name, namespace), api_version)
                )
            except KeyError:
                body = status_body(404, "NotFound", f'{plural} "{name}" not found', name=name)
                self._send_json(handler, 404, body)
        elif query.get("watch") in ("true", "1"):
            self._watch(handler, plural, namespace, query, api_version)
        else:
            self._list(handler, plural, namespace, query, api_version)

    def _groups(self) -> dict[str, list[str]]:
        return {**BUILTIN_GROUPS, **{g: list(v) for g, v in self.served.items() if v}}

    def _discovery(self, handler: BaseHTTPRequestHandler, path: str) -> bool:
        """GET /apis (APIGroupList) and /apis/GROUP (APIGroup); False for other paths."""

        def group_doc(group: str, versions: list[str]) -> dict[str, Any]:
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            return {"name": group, "versions": entries, "preferredVersion": entries[0]}

        parts = path.strip("/").split("/")
        if parts == ["apis"]:
            groups = [group_doc(g, v) for g, v in self._groups().items()]
            self._send_json(
                handler, 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
            )
            return True
        if len(parts) == 2 and parts[0] == "apis":
            versions = self._groups().get(parts[1])
            if not versions:
                self._send_json(handler, 404, status_body(404, "NotFound", NOT_FOUND))
            else:
                body = {"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1], versions)}
                self._send_json(handler, 200, body)
            return True
        return False

    def _route(self, path: str) -> tuple[str, str, str, str | None, str | None] | None:
        for (prefix, plural), _ in RESOURCES.items():
            head = f"{prefix}/namespaces/"
            if not path.startswith(head):
                continue
            group = group_of(prefix)
            custom = group and group[0] not in BUILTIN_GROUPS
            if custom and group[1] not in self.served.get(group[0], []):
                continue  # that CRD (version) is not installed in this cluster
            parts = path[len(head) :].split("/")
            if len(parts) >= 2 and parts[1] == plural:
                name = parts[2] if len(parts) > 2 else None
                sub = parts[3] if len(parts) > 3 else None
                return prefix, plural, parts[0], name, sub
        return None

    def _create(self, handler, plural: str, namespace: str, body: dict[str, Any], api_version):
        name = body["metadata"]["name"]
        kind = body.get("kind", plural)
        with self.changed:
            exists = (plural, namespace, name) in self.objects
        if exists:
            group = api_version.split("/")[0] if "/" in api_version else ""
            resource = f"{plural}.{group}" if group else plural
            message = f'{resource} "{name}" already exists'
            body_409 = status_body(409, "AlreadyExists", message, name=name, kind=plural)
            self._send_json(handler, 409, body_409)
            return
        body["metadata"]["namespace"] = namespace
        body.setdefault("status", {})
        created = self.put(plural, body)
        self._send_json(handler, 201, served_as(created, api_version))
        callback = {"Job": self.on_job_created, "JobSet": self.on_jobset_created}.get(kind)
        if callback:
            self.start_scenario(lambda: callback(copy.deepcopy(created)))

    def _list(self, handler, plural: str, namespace: str, query: dict[str, str], api_version):
        # Items of a built-in list carry no apiVersion/kind (the real server leaves TypeMeta
        # off them); custom resources' items keep theirs.
        builtin = api_version.split("/")[0] not in self.served
        with self.changed:
            items = [
                without_type_meta(o) if builtin else served_as(copy.deepcopy(o), api_version)
                for (p, ns, _), o in self.objects.items()
                if p == plural
                and ns == namespace
                and matches(o, labels=query.get("labelSelector"), fields=query.get("fieldSelector"))
            ]
            rv = str(next(self.resource_version))
        kind = storage_version(plural)[0]
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

    def _watch(self, handler, plural: str, namespace: str, query: dict[str, str], api_version):
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
                # A lagging watch (a busy API server, a slow connection): events arrive late,
                # and in a different order than another resource's watch sends them.
                time.sleep(self.watch_lag_s.get(plural, 0.0))
                event = {"type": event_type, "object": served_as(obj, api_version)}
                line = json.dumps(event).encode() + b"\n"
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


# -- Kueue Workload conditions as Kueue writes them --------------------------------------------


def workload_condition(type_: str, status: bool, *, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Condition of a Workload (QuotaReserved, Admitted, ...)."""
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
        "observedGeneration": 1,
    }
