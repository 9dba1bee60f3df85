"""Follow a submitted Job or JobSet with the watch API until it completes or fails.

`kubectl wait` cannot wait for "Complete or Failed" (kubernetes/kubectl#1629); this can, and
it also streams every pod's log as the pod starts (prefixed by its worker index), says why
pods are Pending or why Kueue keeps the Job suspended, and on failure prints the pods' events
and termination messages. From the chief's JSON log lines it prints a `progress:` line every
`progress_every_s` and one as its last line (streamtrain_launcher.progress).

    code = follow_job(api, namespace="streamtrain", name="streamtrain-abc-x7k2p",
                      timeout_s=6 * 3600, out=sys.stdout, kind="Job")   # or kind="JobSet"

Two watcher threads (the Job or JobSet, its pods) feed one queue; the caller's thread owns all
state. A watch that expires (410 Gone) is resumed by listing again. A JobSet's pods are
found by its `jobset.sigs.k8s.io/jobset-name` label, across its restarts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from streamtrain_launcher.exitcodes import LaunchError, LaunchExit
from streamtrain_launcher.kube import JOBSET, api_errors, translate
from streamtrain_launcher.progress import Progress
from streamtrain_launcher.queueing import QueueExplainer, is_queued

logger = logging.getLogger(__name__)

CONTAINER = "trainer"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RESTART_LABEL = "jobset.sigs.k8s.io/restart-attempt"
# The condition types that end a Job and a JobSet: (succeeded, failed).
FINAL = {"Job": ("Complete", "Failed"), "JobSet": ("Completed", "Failed")}
# Waiting reasons that are progress, not problems.
NORMAL_WAITING = frozenset({"ContainerCreating", "PodInitializing"})
# Trainer exit codes that stop the Job at once (podFailurePolicy FailJob).
VERDICT_CODES = (LaunchExit.BAD_INPUT, LaunchExit.QUALITY_GATE, LaunchExit.NO_GPU)
MAX_WATCH_FAILURES = 5
LOG_DRAIN_S = 10.0
# How often, at most, the Workload of a Kueue-suspended Job is read again while it waits.
QUEUE_POLL_S = 15.0


@dataclass(frozen=True)
class Event:
    source: str  # "job" (the Job or JobSet), "pod" or "error"
    type: str  # ADDED, MODIFIED, DELETED, or "" for errors
    obj: Any  # the object as JSON (a dict), or the LaunchError


def pending_reason(pod: dict[str, Any]) -> str | None:
    """Why `pod` is not running yet, if something other than time is in the way."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message', '')}"
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in NORMAL_WAITING:
            return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return None


def trainer_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The trainer container's `state` ({} if unknown)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == CONTAINER:
            return container.get("state") or {}
    return {}


def worker_index(pod: dict[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(INDEX_LABEL, "0")


def worker_prefix(pod: dict[str, Any]) -> str:
    """`worker I`, and `restart R` for the pods of a JobSet's R-th restart."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    restart = labels.get(RESTART_LABEL, "0")
    return f"worker {worker_index(pod)}" + (f" restart {restart}" if restart != "0" else "")


def job_condition(job: dict[str, Any], kind: str = "Job") -> dict[str, Any] | None:
    """The final condition (Complete or Failed; a JobSet's Completed or Failed), once set."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in FINAL[kind] and condition.get("status") == "True":
            return condition
    return None


def failure_exit_code(condition: dict[str, Any], pods: list[dict[str, Any]]) -> LaunchExit:
    """The exit code a failed Job maps to: the trainer's verdict first, then the Job's reason."""
    finished = []
    for pod in pods:
        terminated = trainer_state(pod).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            finished.append((terminated.get("finishedAt") or "", int(terminated["exitCode"])))
    finished.sort()
    codes = [code for _, code in finished]
    for code in codes:
        if code in VERDICT_CODES:
            return LaunchExit(code)
    if condition.get("reason") == "DeadlineExceeded":
        return LaunchExit.JOB_DEADLINE
    if codes and codes[-1] == LaunchExit.STORAGE_UNAVAILABLE:
        return LaunchExit.STORAGE_UNAVAILABLE
    return LaunchExit.JOB_FAILED


class JobFollower:
    """Follows one Job or JobSet; `run()` returns the launcher's exit code."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        timeout_s: float | None,
        out: TextIO,
        watch_timeout_s: int = 60,
        kind: str = "Job",
        progress_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in FINAL:
            raise ValueError(f"cannot follow a {kind}")
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.pod_selector = f"{JOB_NAME_LABEL if kind == 'Job' else JOBSET_NAME_LABEL}={name}"
        self.queue = QueueExplainer(api, namespace=namespace)
        self.queue_reason: str | None = None
        self.queue_checked = 0.0
        self.restarts = 0
        self.timeout_s = timeout_s
        self.out = out
        self.watch_timeout_s = watch_timeout_s
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.print_lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.log_threads: dict[str, threading.Thread] = {}
        self.reported: dict[str, str | None] = {}
        self.job: dict[str, Any] | None = None
        # Whether the Job ended (or was deleted), rather than the launcher giving up on it.
        self.ended = False
        # `clock` paces the progress lines only; deadlines keep time.monotonic.
        self.progress = Progress(every_s=progress_every_s, emit=self._print, clock=clock)

    @property
    def what(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def _list_jobsets(self, namespace: str, **kwargs: Any) -> Any:
        """list_namespaced_custom_object for JobSets, shaped like the typed list calls."""
        group, version, plural = JOBSET
        return self.custom.list_namespaced_custom_object(
            group, version, namespace, plural, **kwargs
        )

    # -- watchers (threads) -------------------------------------------------------------

    def _watch(self, source: str, list_fn: Callable[..., Any], **selector: str) -> None:
        """Lists, then watches from the list's resourceVersion; relists on 410 Gone."""
        resource_version: str | None = None
        failures = 0
        while not self.stop.is_set():
            try:
                if resource_version is None:
                    # Typed lists (V1JobList) and custom-object lists (dicts) alike, as JSON.
                    listing = self.api.sanitize_for_serialization(
                        list_fn(self.namespace, **selector)
                    )
                    items = listing.get("items") or []
                    resource_version = listing["metadata"]["resourceVersion"]
                    for obj in items:
                        self.events.put(Event(source, "ADDED", obj))
                    if source == "job" and not items:
                        # Created moments ago and already gone: someone deleted it.
                        self.events.put(Event(source, "DELETED", {}))
                        return
                stream = watch.Watch().stream(
                    list_fn,
                    self.namespace,
                    resource_version=resource_version,
                    timeout_seconds=self.watch_timeout_s,
                    _request_timeout=self.watch_timeout_s + 10,
                    **selector,
                )
                for event in stream:
                    if self.stop.is_set():
                        return
                    obj = event["raw_object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    self.events.put(Event(source, event["type"], obj))
                failures = 0
            except ApiException as e:
                if e.status == 410:
                    # The resourceVersion is older than the server keeps: start over.
                    logger.info("%s watch expired (410 Gone); listing again", self._noun(source))
                    resource_version = None
                    continue
                if e.status and e.status < 500:
                    error = translate(e, what=f"watching {self._noun(source)}s")
                    self.events.put(Event("error", "", error))
                    return
                failures += 1
                last: Exception = e
            except Exception as e:  # connection reset, timeouts, truncated stream
                failures += 1
                last = e
            else:
                continue
            if failures >= MAX_WATCH_FAILURES:
                error = translate(last, what=f"watching {self._noun(source)}s")
                self.events.put(Event("error", "", error))
                return
            logger.info("%s watch interrupted (%s); reconnecting", self._noun(source), last)
            self.stop.wait(min(2**failures * 0.2, 5))

    def _print(self, text: str) -> None:
        with self.print_lock:
            print(text, file=self.out, flush=True)

    def _stream_logs(self, pod_name: str, prefix: str, chief: bool) -> None:
        try:
            lines = watch.Watch().stream(
                self.core.read_namespaced_pod_log,
                name=pod_name,
                namespace=self.namespace,
                container=CONTAINER,
                follow=True,
            )
            for line in lines:
                if chief:
                    self.progress.read(line)
                with self.print_lock:
                    if self.stop.is_set():
                        return  # followed to the end: the last line has been printed
                    print(f"[{prefix}] {line}", file=self.out, flush=True)
        except Exception as e:
            # Logs are a convenience: a failed stream must not fail the launch.
            logger.warning("logs of pod %s unavailable: %s", pod_name, e)

    def _noun(self, source: str) -> str:
        return self.kind.lower() if source == "job" else source

    # -- state (caller's thread) --------------------------------------------------------

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED":
            self.pods.pop(name, None)
            return
        self.pods[name] = pod
        reason = pending_reason(pod)
        if reason != self.reported.get(name) and reason:
            logger.warning("pod %s (%s) waiting: %s", name, worker_prefix(pod), reason)
        self.reported[name] = reason
        state = trainer_state(pod)
        if name not in self.log_threads and ("running" in state or "terminated" in state):
            prefix = worker_prefix(pod)
            thread = threading.Thread(
                target=self._stream_logs,
                args=(name, prefix, worker_index(pod) == "0"),
                name=f"logs-{name}",
                daemon=True,
            )
            self.log_threads[name] = thread
            thread.start()

    def _explain_queue(self, *, force: bool = False) -> None:
        """Reads the Workload of a Kueue-suspended Job; logs what it waits for when that changes."""
        if not (self.job and is_queued(self.job)):
            return
        now = time.monotonic()
        if not force and self.queue_reason is not None and now - self.queue_checked < QUEUE_POLL_S:
            return
        self.queue_checked = now
        reason = self.queue.explain(self.job, self.kind)
        if reason != self.queue_reason:
            logger.warning("%s waiting: %s", self.what, reason)
        self.queue_reason = reason

    def _on_top(self, obj: dict[str, Any]) -> None:
        """A new state of the Job or JobSet: Kueue's verdict, a JobSet's restarts."""
        was_queued = self.job is not None and is_queued(self.job)
        self.job = obj
        if is_queued(obj):
            self._explain_queue(force=not was_queued)
        elif was_queued:
            logger.info("%s admitted: no longer suspended", self.what)
            self.queue_reason = None
        restarts = int((obj.get("status") or {}).get("restarts") or 0)
        if restarts > self.restarts:
            self.restarts = restarts
            restarting = next(
                (
                    c
                    for c in (obj.get("status") or {}).get("conditions") or []
                    if c.get("type") == "RestartingJobSet"
                ),
                {},
            )
            logger.warning(
                "%s restarting every worker (restart %d): %s: %s",
                self.what,
                restarts,
                restarting.get("reason", "?"),
                restarting.get("message", ""),
            )

    def _waiting_summary(self) -> str:
        reasons = [f"pod {n}: {r}" for n, r in sorted(self.reported.items()) if r]
        if reasons:
            return "; ".join(reasons)
        if self.job and is_queued(self.job):
            self._explain_queue(force=True)
            return f"the {self.kind} is {self.queue_reason}"
        if self.job and (self.job.get("spec") or {}).get("suspend"):
            return f"the {self.kind} is suspended"
        if not self.pods:
            return "no pods created yet"
        phases = sorted({(p.get("status") or {}).get("phase", "?") for p in self.pods.values()})
        return f"pods {', '.join(phases)}"

    def _catch_up_pods(self) -> None:
        """Lists the pods once more: the pod watch can lag the Job's, and a pod that ran and
        ended in between would otherwise have its log missed."""
        try:
            with api_errors(f"pods of {self.what}"):
                listing = self.core.list_namespaced_pod(
                    self.namespace, label_selector=self.pod_selector
                )
        except LaunchError as e:
            logger.warning("%s", e)
            return
        for pod in listing.items:
            self._on_pod("MODIFIED", self.api.sanitize_for_serialization(pod))

    def _drain_logs(self) -> None:
        self._catch_up_pods()
        deadline = time.monotonic() + LOG_DRAIN_S
        for thread in self.log_threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _failed_jobs(self) -> list[dict[str, Any]]:
        """A JobSet's failed child Jobs (their reasons say what ended the run)."""
        with api_errors(f"Jobs of {self.what}"):
            listing = self.batch.list_namespaced_job(
                self.namespace, label_selector=f"{JOBSET_NAME_LABEL}={self.name}"
            )
        jobs = [self.api.sanitize_for_serialization(j) for j in listing.items]
        return [j for j in jobs if (job_condition(j) or {}).get("type") == "Failed"]

    def _report_failure(self, condition: dict[str, Any]) -> LaunchExit:
        with api_errors(f"pods of {self.what}"):
            listing = self.core.list_namespaced_pod(
                self.namespace, label_selector=self.pod_selector
            )
        pods = [self.api.sanitize_for_serialization(p) for p in listing.items]
        pods.sort(key=lambda p: (int(worker_index(p)), p["metadata"].get("creationTimestamp", "")))
        logger.error(
            "%s failed: %s: %s", self.what, condition.get("reason"), condition.get("message", "")
        )
        verdict = condition
        if self.kind == "JobSet":
            for job in self._failed_jobs():
                failed = job_condition(job)
                with self.print_lock:
                    print(
                        f"job {job['metadata']['name']} failed: {failed.get('reason')}: "
                        f"{failed.get('message', '')}",
                        file=self.out,
                        flush=True,
                    )
                if failed.get("reason") == "DeadlineExceeded":
                    verdict = failed
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            terminated = trainer_state(pod).get("terminated") or {}
            lines = [f"pod {pod_name} ({worker_prefix(pod)})"]
            if terminated:
                lines.append(
                    f"  exit code {terminated.get('exitCode')} ({terminated.get('reason', '')})"
                )
                message = (terminated.get("message") or "").rstrip()
                if message:
                    lines.append("  termination message:")
                    lines.extend(f"    {line}" for line in message.splitlines())
            with api_errors(f"events of pod {pod_name}"):
                events = self.core.list_namespaced_event(
                    self.namespace, field_selector=f"involvedObject.name={pod_name}"
                )
            if events.items:
                lines.append("  events:")
                lines.extend(f"    {e.type} {e.reason}: {e.message}" for e in events.items)
            with self.print_lock:
                print("\n".join(lines), file=self.out, flush=True)
        code = failure_exit_code(verdict, pods)
        logger.error("exit code %d (%s)", code, code.name)
        return code

    def run(self) -> LaunchExit:
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        list_top = self.batch.list_namespaced_job if self.kind == "Job" else self._list_jobsets
        watchers = [
            threading.Thread(
                target=self._watch,
                args=("job", list_top),
                kwargs={"field_selector": f"metadata.name={self.name}"},
                name=f"watch-{self.kind.lower()}",
                daemon=True,
            ),
            threading.Thread(
                target=self._watch,
                args=("pod", self.core.list_namespaced_pod),
                kwargs={"label_selector": self.pod_selector},
                name="watch-pods",
                daemon=True,
            ),
        ]
        for thread in watchers:
            thread.start()
        try:
            return self._loop(deadline)
        finally:
            self.stop.set()
            self.progress.finish(ended=self.ended)

    def _loop(self, deadline: float | None) -> LaunchExit:
        while True:
            self.progress.tick()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise LaunchError(
                    f"--timeout {self.timeout_s:g}s reached; {self.what} keeps running: "
                    f"{self._waiting_summary()}",
                    LaunchExit.TIMEOUT,
                )
            try:
                event = self.events.get(timeout=min(1.0, remaining or 1.0))
            except queue.Empty:
                self._explain_queue()
                continue
            if event.source == "error":
                raise event.obj
            if event.source == "pod":
                self._on_pod(event.type, event.obj)
                continue
            if event.type == "DELETED":
                self.ended = True
                raise LaunchError(
                    f"{self.what} was deleted while being followed", LaunchExit.JOB_DELETED
                )
            self._on_top(event.obj)
            condition = job_condition(event.obj, self.kind)
            if condition is None:
                continue
            self.ended = True
            self._drain_logs()
            if condition["type"] == FINAL[self.kind][0]:
                logger.info("%s completed", self.what)
                return LaunchExit.OK
            return self._report_failure(condition)


def follow_job(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    timeout_s: float | None,
    out: TextIO,
    watch_timeout_s: int = 60,
    kind: str = "Job",
    progress_every_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> LaunchExit:
    """Follows the Job (or JobSet) `namespace/name` to its end; raises LaunchError on timeout
    or API errors. Prints a progress line every `progress_every_s` (0: none)."""
    return JobFollower(
        api,
        namespace=namespace,
        name=name,
        timeout_s=timeout_s,
        out=out,
        watch_timeout_s=watch_timeout_s,
        kind=kind,
        progress_every_s=progress_every_s,
        clock=clock,
    ).run()
