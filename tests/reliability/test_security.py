"""Security checks summarised in docs/reliability.md, each from a check executed here.

checkov on the rendered k8s/ overlays and on the Dockerfile, hadolint at warning level, the
image's user, the rendered Jobs' security context, the launcher Role's verbs (against the API
calls the launcher really makes), no credentials in the repository or the image's build
context, and every launcher input validated before use. Helpers come from
tests/test_k8s_manifests.py and tests/test_dockerfile.py.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_security.py
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from kube_api_server import (
    KubeApiServer,
    terminated_status,
    unschedulable_status,
    workload_condition,
)
from test_dockerfile import DOCKERFILE, parse_dockerfile
from toolbox import by_kind, checkov_bin, docs_of, jobs_of

from streamtrain_launcher.cli import launch
from streamtrain_launcher.options import LABEL_VALUE, LaunchOptions, label_value

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
# What the launcher needs and nothing more (docs/operations.md, k8s/rbac/launcher.yaml).
MINIMAL_GRANTS = (
    {("batch", "jobs", v) for v in ("create", "get", "list", "watch")}
    | {("jobset.x-k8s.io", "jobsets", v) for v in ("create", "get", "list", "watch")}
    | {("kueue.x-k8s.io", "workloads", "list")}
    | {("", "services", "create"), ("", "pods/log", "get")}
    | {("", r, v) for r in ("pods", "events") for v in ("get", "list", "watch")}
)
CREDENTIAL_PATTERNS = {
    "private key block": re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "service-account JSON key": re.compile(rb'"private_key"\s*:\s*"-----BEGIN'),
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key assignment": re.compile(
        rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{40}"
    ),
    "GCP API key": re.compile(rb"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "GCP OAuth client secret": re.compile(rb"\bGOCSPX-[0-9A-Za-z_\-]{28}\b"),
}
KEY_FILE_SUFFIXES = (".pem", ".p12", ".pfx", ".key", ".jks", ".keystore")


def _checkov(*args: str) -> dict:
    result = subprocess.run(
        [checkov_bin(), *args, "--skip-download", "-ojson"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_on_the_rendered_manifests(rendered, row):
    directory = next(iter(rendered.values())).parent
    report = _checkov(f"--directory={directory}", "--framework=kubernetes")
    summary = report["summary"]
    skipped = report["results"]["skipped_checks"]
    row(
        area="Security",
        case="checkov: Kubernetes manifests",
        injected=f"`kubectl kustomize` of {', '.join(sorted(rendered))} "
        f"({summary['resource_count']} resources)",
        observed=f"checkov {summary['checkov_version']}: {summary['passed']} passed, "
        f"{summary['failed']} failed, {summary['skipped']} skipped "
        f"({', '.join(sorted({c['check_id'] for c in skipped})) or 'none'}, each with a reason)",
    )
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 0 and failed == [] and summary["parsing_errors"] == 0
    assert all(c["check_result"].get("suppress_comment") for c in skipped)


def test_checkov_on_the_dockerfile(row):
    report = _checkov(f"--file={DOCKERFILE}", "--framework=dockerfile")
    summary = report["summary"]
    skipped = report["results"]["skipped_checks"]
    row(
        area="Security",
        case="checkov: Dockerfile",
        injected="Dockerfile",
        observed=f"checkov {summary['checkov_version']}: {summary['passed']} passed, "
        f"{summary['failed']} failed, {summary['skipped']} skipped",
    )
    assert summary["passed"] > 0 and summary["failed"] == 0
    assert all(c["check_result"].get("suppress_comment") for c in skipped)


def test_hadolint_at_warning_level(row):
    result = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout)
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    version = subprocess.run(
        [str(BIN / "hadolint"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    row(
        area="Security",
        case="hadolint",
        injected="Dockerfile, failure threshold: warning",
        observed=f"{version}: {len(serious)} errors/warnings, "
        f"{len(findings) - len(serious)} info/style findings",
    )
    assert serious == [], serious


def test_container_runs_as_a_non_root_user(row):
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    users = [args for keyword, args in final.instructions if keyword == "USER"]
    runs = " ".join(args for keyword, args in final.instructions if keyword == "RUN")
    uid, _, gid = users[-1].partition(":")
    created = re.search(r"useradd\b[^&;]*--uid (\d+)", runs)
    row(
        area="Security",
        case="container user",
        injected="final stage of the Dockerfile",
        observed=f"USER {users[-1]} (useradd --uid {created[1] if created else '?'}, "
        f"shell /usr/sbin/nologin: {'/usr/sbin/nologin' in runs})",
    )
    assert uid.isdigit() and int(uid) >= 1000, "a numeric non-root UID (runAsNonRoot checks it)"
    assert gid.isdigit() and int(gid) != 0
    assert created and created[1] == uid


def test_rendered_jobs_run_restricted(rendered, row):
    seen = []
    renderings = [name for name in rendered if name != "rbac"]
    for overlay in renderings:
        # A JobSet's workers as the Job the JobSet controller creates from its template.
        (job,) = jobs_of(docs_of(rendered[overlay].read_text()))
        pod = job["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            facts = {
                "runAsNonRoot": pod["securityContext"].get("runAsNonRoot")
                or security.get("runAsNonRoot"),
                "readOnlyRootFilesystem": security.get("readOnlyRootFilesystem"),
                "capabilities.drop": security.get("capabilities", {}).get("drop"),
                "allowPrivilegeEscalation": security.get("allowPrivilegeEscalation"),
                "seccompProfile": (
                    security.get("seccompProfile") or pod["securityContext"].get("seccompProfile")
                ),
                "automountServiceAccountToken": pod.get("automountServiceAccountToken"),
                "privileged": security.get("privileged", False),
                "hostNetwork/PID/IPC": any(
                    pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")
                ),
            }
            seen.append((overlay, container["name"], facts))
    first = seen[0][2]
    row(
        area="Security",
        case="Job security context",
        injected=f"rendered Jobs (a JobSet's: its workers' Job) of {', '.join(renderings)}",
        observed=f"{len(seen)} containers; runAsNonRoot {first['runAsNonRoot']}, "
        f"readOnlyRootFilesystem {first['readOnlyRootFilesystem']}, "
        f"drop {first['capabilities.drop']}, "
        f"allowPrivilegeEscalation {first['allowPrivilegeEscalation']}, "
        f"seccomp {first['seccompProfile']['type'] if first['seccompProfile'] else None}, "
        f"automountServiceAccountToken {first['automountServiceAccountToken']}, "
        f"privileged {first['privileged']}, host namespaces {first['hostNetwork/PID/IPC']}",
    )
    expected = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "capabilities.drop": ["ALL"],
        "allowPrivilegeEscalation": False,
        "seccompProfile": {"type": "RuntimeDefault"},
        "automountServiceAccountToken": False,
        "privileged": False,
        "hostNetwork/PID/IPC": False,
    }
    for overlay, name, facts in seen:
        assert facts == expected, (overlay, name, facts)


def _verb(method: str, target: str) -> tuple[str, str, str] | None:
    """(apiGroup, resource, verb) of one request the launcher made; None for API discovery
    (/apis, /apis/GROUP), which every authenticated user may read (system:discovery)."""
    url = urlparse(target)
    parts = url.path.strip("/").split("/")
    if "namespaces" not in parts:
        assert parts[0] == "apis" and len(parts) <= 2 and method == "GET", target
        return None
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2 :]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    if method == "POST":
        return group, resource, "create"
    if len(rest) > 1:
        return group, resource, "get"
    return group, resource, "watch" if "watch=true" in url.query else "list"


def test_launcher_role_grants_exactly_what_the_launcher_uses(rendered, tmp_path, row):
    docs = docs_of(rendered["rbac"].read_text())
    (role,) = by_kind(docs, "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Runs followed to the end: a 2-worker success (one pod Pending first), a failure (the
    # launcher then reads the pod's events and termination message), a 2-worker JobSet that
    # fails on a verdict (its Jobs are read too), and a Kueue-suspended Job until --timeout
    # (its Workload is read).
    with KubeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

        def success(job):
            pending = api.add_pod(job, index=1, status=unschedulable_status("no GPU yet"))
            api.add_event(pending, reason="FailedScheduling", message="no GPU yet")
            time.sleep(0.3)
            for index in range(2):
                api.run_pod(job, index=index, logs=[f"worker {index} done"], exit_code=0)
            api.set_job_condition(job["metadata"]["name"], "Complete", reason="Done")

        def failure(job):
            pod = api.run_pod(job, index=0, logs=["bad data"], exit_code=0)
            api.set_pod_status(pod, terminated_status(job, exit_code=2, message="bad --data"))
            api.add_event(pod, reason="BackOff", message="restarting")
            api.set_job_condition(job["metadata"]["name"], "Failed", reason="PodFailurePolicy")

        def jobset_failure(jobset):
            job = api.jobset_child_job(jobset)
            for index in range(2):
                pod = api.run_pod(job, index=index, logs=["checking data"], exit_code=0)
            api.set_pod_status(pod, terminated_status(job, exit_code=2, message="bad --data"))
            api.set_job_condition(job["metadata"]["name"], "Failed", reason="PodFailurePolicy")
            api.set_jobset_condition(
                jobset["metadata"]["name"], "Failed", reason="FailJobSetFailurePolicyAction"
            )

        def queued(job):
            api.add_workload(
                job,
                conditions=[
                    workload_condition("QuotaReserved", False, reason="Pending", message="")
                ],
            )

        api.on_jobset_created = jobset_failure
        codes = []
        for scenario, extra in ((success, ["--overlay=multi-worker", "--workers=2"]),
                                (failure, ["--overlay=gke"]),
                                (None, ["--overlay=jobset", "--workers=2"]),
                                (queued, ["--overlay=gke", "--queue=training"])):  # fmt: skip
            api.on_job_created = scenario
            codes.append(
                launch(
                    [
                        f"--kubeconfig={kubeconfig}",
                        f"--kubectl={KUBECTL}",
                        *extra,
                        "--image=r.io/st/trainer:3f2a1bc",
                        "--data=gs://data-bkt/d",
                        "--output=gs://model-bkt/m",
                        "--git-sha=3f2a1bc",
                        "--wait",
                        "--timeout=2s" if scenario is queued else "--timeout=30s",
                    ],
                    environ={},
                    out=io.StringIO(),
                )
            )
        requests = list(api.requests)
        used = {v for v in (_verb(method, target) for method, target in requests) if v}
        discovery = sorted({urlparse(t).path for m, t in requests if not _verb(m, t)})
    show = lambda grants: ", ".join(  # noqa: E731
        f"{r}:{v}" if not g else f"{g}/{r}:{v}" for g, r, v in sorted(grants)
    )
    row(
        area="Security",
        case="launcher Role verbs",
        injected="k8s/rbac Role; launch --wait against the API test server: a succeeding "
        "2-worker Job, a failing 1-worker Job, a failing 2-worker JobSet, a Kueue-queued Job "
        "until --timeout",
        observed=f"Role grants {len(granted)}: {show(granted)}; the launcher used "
        f"{len(used)}; used but not granted: {show(used - granted) or 'none'}; "
        f"granted but unused: {show(granted - used) or 'none'}; "
        f"API discovery (system:discovery): {', '.join(discovery) or 'none'}",
    )
    assert codes == [0, 2, 2, 12]
    assert used <= granted, used - granted
    assert granted == MINIMAL_GRANTS, granted ^ MINIMAL_GRANTS
    assert not any("*" in part for grant in granted for part in grant)


def _tracked_files() -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    )
    return [p for p in result.stdout.decode().split("\0") if p]


def test_no_credentials_in_the_repository(row):
    files = _tracked_files()
    findings = []
    scanned = 0
    for name in files:
        path = ROOT / name
        if name.lower().endswith(KEY_FILE_SUFFIXES):
            findings.append((name, "key file"))
        if not path.is_file():
            continue  # deleted in the work tree, or a submodule
        data = path.read_bytes()
        scanned += len(data)
        for what, pattern in CREDENTIAL_PATTERNS.items():
            if pattern.search(data):
                findings.append((name, what))
    row(
        area="Security",
        case="no credentials in the repository",
        injected=f"{len(files)} tracked files ({scanned // 1024} KiB): private keys, "
        f"service-account JSON, AWS/GCP key patterns, {'/'.join(KEY_FILE_SUFFIXES)} files",
        observed=f"{len(findings)} findings" + (f": {findings}" if findings else ""),
    )
    assert findings == []
    # The scanner finds what it looks for (a check that cannot fail is a defect).
    # (Assembled from pieces, so that this file does not itself hold a key-shaped string.)
    planted = b'{"type": "service_account", "private_key": "' + b"-----BEGIN " + b"PRIVATE KEY"
    planted += b"-----\\nMII"
    assert CREDENTIAL_PATTERNS["service-account JSON key"].search(planted)
    assert CREDENTIAL_PATTERNS["private key block"].search(planted)
    assert CREDENTIAL_PATTERNS["AWS access key id"].search(b"id=AKIA" + b"ABCDEFGHIJKLMNOP ")


def test_no_credentials_in_the_image(row):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    copies = [
        source.rstrip("/")
        for stage in parse_dockerfile(DOCKERFILE.read_text())
        for keyword, args in stage.instructions
        if keyword in ("COPY", "ADD") and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    in_context = [
        name
        for name in _tracked_files()
        if any(name == a or name.startswith(a + "/") for a in allowed)
    ]
    risky = [
        name
        for name in in_context
        if name.lower().endswith(KEY_FILE_SUFFIXES)
        or any(p.search((ROOT / name).read_bytes()) for p in CREDENTIAL_PATTERNS.values())
    ]
    row(
        area="Security",
        case="no credentials in the image",
        injected=".dockerignore and the Dockerfile's COPY/ADD sources",
        observed=f".dockerignore starts with `{patterns[0]}` and re-includes only "
        f"{', '.join(allowed)}; COPY sources {', '.join(sorted(set(copies)))}; "
        f"{len(in_context)} tracked files in the build context, {len(risky)} with credentials",
    )
    assert patterns[0] == "*", "an allow-list: everything else stays out of the build context"
    assert set(copies) <= set(allowed) <= {"requirements", "pyproject.toml", "README.md", "trainer"}
    assert risky == []


def test_every_launcher_input_is_validated_before_use(row):
    from test_launcher_faults import BAD_INPUTS

    covered = {b.flag.removeprefix("--").replace("-", "_") for b in BAD_INPUTS}
    covered |= {"gpus"} if any(b.flag == "LAUNCH_GPUS" for b in BAD_INPUTS) else set()
    # Free text that only labels the run: made into valid label values, never rejected.
    sanitized = {"git_sha", "submitter"}
    hostile = "feature/x; rm -rf / \n<script>" + "é" * 80
    for value in (hostile, "", "---"):
        cleaned = label_value(value)
        assert LABEL_VALUE.match(cleaned) and len(cleaned) <= 63 and cleaned
    fields = {f.name for f in dataclasses.fields(LaunchOptions)}
    missing = fields - covered - sanitized
    row(
        area="Security",
        case="every launcher input validated before use",
        injected=f"the {len(fields)} fields of LaunchOptions",
        observed=f"{len(fields & covered)} rejected when bad by the Launcher-faults rows "
        f"({len(BAD_INPUTS)} bad inputs, 0 API requests each); {', '.join(sorted(sanitized))} "
        f"made into valid label values (e.g. {label_value(hostile)!r}); "
        f"not covered: {', '.join(sorted(missing)) or 'none'}",
    )
    assert not missing, missing
