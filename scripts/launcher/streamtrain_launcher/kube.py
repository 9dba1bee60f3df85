"""The Kubernetes API client: configuration, error mapping and submission.

    api = connect(kubeconfig=None, context=None)     # kubeconfig, else in-cluster
    submit(api, docs, namespace="streamtrain")        # Service first, then the Job or JobSet

Every API failure becomes a LaunchError with a one-line message and its own exit code
(401/403, 409, 422, unreachable, other).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from streamtrain_launcher.exitcodes import LaunchError, LaunchExit

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The launcher creates these kinds; the rest of a rendering (the trainer's ServiceAccount,
# the NetworkPolicies, --metrics' PodMonitoring) is set up once per namespace with kubectl.
SUBMITTED_KINDS = ("Service", "Job", "JobSet")
JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")  # group, version, plural
# As `kubectl apply` (--validate=strict): an unknown field is a 422, not silently dropped (an
# older JobSet CRD without onJobFailureMessagePatterns would otherwise change the policy).
STRICT = "Strict"
STATUS_EXIT = {
    401: LaunchExit.API_DENIED,
    403: LaunchExit.API_DENIED,
    409: LaunchExit.CONFLICT,
    422: LaunchExit.INVALID,
}
HINTS = {
    401: "check the kubeconfig's credentials (expired token?)",
    403: "bind the launcher's identity to the Role in k8s/rbac",
    409: "pick another --name, or leave --name out for a unique one",
    422: "the rendered manifest is invalid; see --dry-run",
}


def connect(*, kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """An API client from `kubeconfig` (or $KUBECONFIG, ~/.kube/config), else in-cluster."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    try:
        if kubeconfig or Path(path.split(os.pathsep)[0]).is_file():
            config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise LaunchError(
                f"no kubeconfig at {path} and not running in a cluster: pass --kubeconfig",
                LaunchExit.API_UNREACHABLE,
            )
    except yaml.YAMLError as e:
        raise LaunchError(
            f"kubeconfig {path}: not valid YAML ({' '.join(str(e).split())[:160]}); "
            "fix the file or pass another --kubeconfig",
            LaunchExit.API_UNREACHABLE,
        ) from e
    except (ConfigException, OSError, ValueError, TypeError, AttributeError) as e:
        detail = " ".join(str(e).split())
        if isinstance(e, (TypeError, AttributeError)):
            # The client indexes into what it parsed: a scalar or list where a mapping belongs.
            detail = (
                f"not a kubeconfig (expected a mapping with clusters, users, contexts; {detail})"
            )
        raise LaunchError(f"kubeconfig {path}: {detail}", LaunchExit.API_UNREACHABLE) from e
    # Fail fast on a dead server instead of urllib3's default retries with backoff.
    configuration.retries = urllib3.Retry(total=2, connect=2, read=0, backoff_factor=0.2)
    return client.ApiClient(configuration)


def status_message(error: ApiException) -> str:
    """The message of the Kubernetes Status object in the error's body, else its reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return " ".join(str(body["message"]).split())
    return " ".join(str(error.reason or "").split()) or "no message"


def translate(error: Exception, *, what: str, hints: dict[int, str] | None = None) -> LaunchError:
    """`error` from an API call about `what` as a LaunchError with its exit code."""
    if isinstance(error, ApiException) and error.status:
        code = STATUS_EXIT.get(error.status, LaunchExit.API_ERROR)
        hint = (hints or {}).get(error.status) or HINTS.get(error.status)
        message = f"{what}: {error.status} {error.reason}: {status_message(error)}"
        return LaunchError(f"{message} ({hint})" if hint else message, code)
    # ApiException without a status, urllib3 MaxRetryError / ProtocolError, OSError.
    return LaunchError(
        f"{what}: API server unreachable: {' '.join(str(error).split())}",
        LaunchExit.API_UNREACHABLE,
    )


@contextmanager
def api_errors(what: str, hints: dict[int, str] | None = None) -> Iterator[None]:
    """Raises API failures inside the block as LaunchErrors about `what`."""
    try:
        yield
    except LaunchError:
        raise
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, what=what, hints=hints) from e


def call(
    what: str, fn: Callable[..., T], *args: Any, hints: dict[int, str] | None = None, **kwargs: Any
) -> T:
    with api_errors(what, hints):
        return fn(*args, **kwargs)


def submit(api: client.ApiClient, docs: list[dict[str, Any]], *, namespace: str) -> tuple[str, str]:
    """Creates the rendering's Service (if any) and its Job or JobSet; returns (kind, name)."""
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    custom = client.CustomObjectsApi(api)
    submitted = ("", "")
    for doc in sorted(
        docs, key=lambda d: SUBMITTED_KINDS.index(d["kind"]) if d["kind"] in SUBMITTED_KINDS else -1
    ):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Service":
            try:
                call(f"Service {namespace}/{name}", core.create_namespaced_service, namespace, doc)
                logger.info("created Service %s/%s", namespace, name)
            except LaunchError as e:
                # One headless Service serves every multi-worker Job in the namespace.
                if e.exit_code != LaunchExit.CONFLICT:
                    raise
                logger.info("Service %s/%s exists; reusing it", namespace, name)
        elif kind == "Job":
            call(
                f"Job {namespace}/{name}",
                batch.create_namespaced_job,
                namespace,
                doc,
                field_validation=STRICT,
            )
            logger.info("created Job %s/%s", namespace, name)
            submitted = (kind, name)
        elif kind == "JobSet":
            group, version, plural = JOBSET
            call(
                f"JobSet {namespace}/{name}",
                custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                doc,
                field_validation=STRICT,
                hints={
                    404: f"the cluster serves no {plural}.{group}/{version}: install JobSet "
                    "(v0.10 or newer), or use --overlay multi-worker",
                    409: HINTS[409],
                },
            )
            logger.info("created JobSet %s/%s", namespace, name)
            submitted = (kind, name)
        else:
            logger.info(
                "%s/%s: not created by the launcher (a per-namespace object, applied once "
                "with kubectl: k8s/rbac, and components/metrics' for --metrics)",
                kind,
                name,
            )
    return submitted
