"""Why a Job or JobSet waits in a Kueue queue: its Workload's conditions, in one line.

Kueue keeps a Job (or JobSet) labelled `kueue.x-k8s.io/queue-name` suspended and creates a
Workload owned by it (ownerReferences). The Workload's QuotaReserved and Admitted conditions,
and its admission checks (a ProvisioningRequest for GKE flex-start, for one), say what it
waits for. The launcher reads Workloads in the version the cluster serves, found through API
discovery: kueue.x-k8s.io/v1beta2 where served, else v1beta1.

    explainer = QueueExplainer(api, namespace="streamtrain")
    if is_queued(job):
        print(explainer.explain(job))
        # suspended by Kueue in LocalQueue training: Workload job-train-x-1a2b3: QuotaReserved
        # False (Pending: couldn't assign flavors ...); Admitted False (NoReservation: ...)

Reading Workloads is a courtesy: an error (no Kueue, 403) becomes part of the explanation,
never a failed launch.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from streamtrain_launcher.kube import translate

logger = logging.getLogger(__name__)

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP = "kueue.x-k8s.io"
# Newest first: v1beta2 since Kueue 0.15; v1beta1 is what older releases serve.
KNOWN_VERSIONS = ("v1beta2", "v1beta1")
WORKLOADS = "workloads"
SHOWN_CONDITIONS = ("QuotaReserved", "Admitted")


def queue_name(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def is_queued(obj: dict[str, Any]) -> bool:
    """Suspended, with a Kueue queue label: Kueue decides when it starts."""
    return bool((obj.get("spec") or {}).get("suspend")) and queue_name(obj) is not None


def owned_by(workload: dict[str, Any], owner: dict[str, Any]) -> bool:
    """By UID: the items of a Job list carry no `kind`, and a UID names one object anyway."""
    uid = (owner.get("metadata") or {}).get("uid")
    refs = (workload.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(ref.get("uid") == uid for ref in refs)


def describe(workload: dict[str, Any]) -> str:
    """The Workload's admission state in one line."""
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    parts = []
    for kind in SHOWN_CONDITIONS:
        condition = conditions.get(kind)
        if condition is None:
            parts.append(f"{kind} not reported yet")
            continue
        detail = ": ".join(
            x
            for x in (condition.get("reason"), " ".join(str(condition.get("message", "")).split()))
            if x
        )
        parts.append(f"{kind} {condition.get('status')}" + (f" ({detail})" if detail else ""))
    for check in status.get("admissionChecks") or []:
        message = " ".join(str(check.get("message") or "").split())
        parts.append(
            f"admission check {check.get('name')} {check.get('state')}"
            + (f": {message}" if message else "")
        )
    name = (workload.get("metadata") or {}).get("name")
    return f"Workload {name}: " + "; ".join(parts)


class QueueExplainer:
    """Finds and describes the Workload Kueue made for a Job or JobSet."""

    def __init__(self, api: client.ApiClient, *, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self._version: str | None = None
        self._discovered = False

    def served_version(self) -> str | None:
        """The kueue.x-k8s.io version to read Workloads in, or None if none is served."""
        if not self._discovered:
            groups = client.ApisApi(self.api).get_api_versions()
            served = {
                v.version
                for group in groups.groups or []
                if group.name == GROUP
                for v in group.versions or []
            }
            self._version = next((v for v in KNOWN_VERSIONS if v in served), None)
            self._discovered = True
            if self._version:
                logger.debug("reading Kueue Workloads as %s/%s", GROUP, self._version)
        return self._version

    def workload(self, owner: dict[str, Any]) -> dict[str, Any] | None:
        version = self.served_version()
        if version is None:
            return None
        listing = self.custom.list_namespaced_custom_object(
            GROUP, version, self.namespace, WORKLOADS
        )
        for item in listing.get("items") or []:
            if owned_by(item, owner):
                return item
        return None

    def explain(self, owner: dict[str, Any], kind: str = "Job") -> str:
        """Why `owner` (a queued Job or JobSet, `kind`) is not running yet."""
        head = f"suspended by Kueue in LocalQueue {queue_name(owner)}"
        try:
            if self.served_version() is None:
                return f"{head}; the cluster serves no {GROUP} API (is Kueue installed?)"
            found = self.workload(owner)
        except (ApiException, OSError) as e:
            error = translate(e, what=f"reading Kueue Workloads in {self.namespace}")
            return f"{head}; {error}"
        except Exception as e:  # urllib3 errors, a truncated answer: still only a courtesy
            return f"{head}; Kueue Workloads unreadable: {' '.join(str(e).split())}"
        if found is None:
            return (
                f"{head}; no Workload owned by the {kind} yet (is Kueue running, and does the "
                "LocalQueue exist in this namespace?)"
            )
        return f"{head}: {describe(found)}"
