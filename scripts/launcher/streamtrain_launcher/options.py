"""The launcher's inputs: one validated record, the Job's unique name and its labels.

Every input is checked here, before any API call, so that a typo fails in a second with a
message naming the flag instead of as a Job that crashes an hour later.

    opts = LaunchOptions(image="r.io/st/trainer:abc", data="gs://b/d", output="gs://b/m",
                         manifests=Path("k8s"))
    validate(opts)
    name = job_name(opts)            # streamtrain-1a2b3c4-x7k2p
    labels = submission_labels(opts)
"""

from __future__ import annotations

import difflib
import hashlib
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from streamtrain_launcher.exitcodes import LaunchError, LaunchExit

# Indexed Job pods are named {job}-{index}-{5 random}, and their hostname {job}-{index} must
# fit a DNS label (63): 50 leaves room for 12 digits of index.
MAX_NAME = 50
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# docker/distribution's reference grammar, simplified: [registry[:port]/]path[:tag][@digest].
IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
GCS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<path>.*))?$")
TRAINER_ENV = re.compile(r"^TRAINER_[A-Z0-9_]+$")
# Set by the manifests from the launcher's own flags or by Kubernetes: not overridable.
MANAGED_ENV = frozenset(
    {
        "TRAINER_DATA",
        "TRAINER_OUTPUT",
        "TRAINER_EXPECT_GPUS",
        "TRAINER_NUM_WORKERS",
        "TRAINER_WORKER_SERVICE",
        "TRAINER_WORKER_PORT",
        "TRAINER_JOB_NAME",
        "TRAINER_CACHE_DIR",
    }
)
# Every TRAINER_* variable the trainer reads (its field table and TRAINER_CONFIG), written out
# because the launcher is installed without the trainer; a test keeps the two equal.
TRAINER_VARIABLES = frozenset(
    {
        "TRAINER_AUGMENT",
        "TRAINER_BATCH_SIZE",
        "TRAINER_CACHE_DIR",
        "TRAINER_CACHE_SIZE_MB",
        "TRAINER_CHECKPOINT_DIR",
        "TRAINER_CHECKPOINT_EVERY",
        "TRAINER_CLASSES",
        "TRAINER_CLASS_WEIGHT",
        "TRAINER_CLIP_NORM",
        "TRAINER_COLLECTIVE_TIMEOUT_S",
        "TRAINER_PEER_WAIT_S",
        "TRAINER_CONFIG",
        "TRAINER_CPU_REPLICAS",
        "TRAINER_DATA",
        "TRAINER_DECODE_PROCESSES",
        "TRAINER_DECODE_THREADS",
        "TRAINER_DETERMINISTIC",
        "TRAINER_DTYPE",
        "TRAINER_EARLY_STOPPING_PATIENCE",
        "TRAINER_EPOCHS",
        "TRAINER_EXPECT_GPUS",
        "TRAINER_FETCH_THREADS",
        "TRAINER_FREEZE_EPOCHS",
        "TRAINER_IMAGE_SIZE",
        "TRAINER_INDEX",
        "TRAINER_INIT_WEIGHTS",
        "TRAINER_JIT_COMPILE",
        "TRAINER_JOB_NAME",
        "TRAINER_KEEP",
        "TRAINER_KEEP_CHECKPOINTS",
        "TRAINER_LABEL_SMOOTHING",
        "TRAINER_LEARNING_RATE",
        "TRAINER_LOGICAL_GPUS_PER_GPU",
        "TRAINER_LOG_EVERY",
        "TRAINER_LOG_FORMAT",
        "TRAINER_LR_SCHEDULE",
        "TRAINER_MAX_STEPS_PER_EPOCH",
        "TRAINER_METRICS_PORT",
        "TRAINER_MIN_VAL_ACCURACY",
        "TRAINER_MIXED_PRECISION",
        "TRAINER_MODEL",
        "TRAINER_MOMENTUM",
        "TRAINER_NUM_WORKERS",
        "TRAINER_ON_CORRUPT",
        "TRAINER_OPTIMIZER",
        "TRAINER_OUTPUT",
        "TRAINER_PREFETCH_BATCHES",
        "TRAINER_REMAINDER",
        "TRAINER_REQUEST_TIMEOUT_S",
        "TRAINER_RESIZE",
        "TRAINER_SCALE_LR",
        "TRAINER_SEED",
        "TRAINER_STALL_TIMEOUT_S",
        "TRAINER_STEPS_PER_EXECUTION",
        "TRAINER_STORAGE_DEADLINE_S",
        "TRAINER_TENSORBOARD_DIR",
        "TRAINER_TRACE_STEPS",
        "TRAINER_VAL_SPLIT",
        "TRAINER_WARMUP_EPOCHS",
        "TRAINER_WEIGHTS",
        "TRAINER_WEIGHT_DECAY",
        "TRAINER_WORKER_PORT",
        "TRAINER_WORKER_SERVICE",
    }
)
# Set by components/metrics (--metrics): the port its PodMonitoring and NetworkPolicy name.
METRICS_ENV = "TRAINER_METRICS_PORT"
MAX_GPUS = 16
MAX_WORKERS = 64

LABEL_PREFIX = "streamtrain.io/"


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    image: str
    data: str
    output: str
    manifests: Path
    overlay: str = "gke"
    gpus: int = 2
    workers: int = 1
    namespace: str = "streamtrain"
    queue: str | None = None
    metrics: bool = False
    name: str | None = None
    name_prefix: str = "streamtrain"
    git_sha: str = "unknown"
    submitter: str = "unknown"
    trainer_env: dict[str, str] = field(default_factory=dict)


def _bad(flag: str, message: str) -> LaunchError:
    return LaunchError(f"{flag}: {message}", LaunchExit.BAD_INPUT)


def validate_uri(flag: str, uri: str) -> None:
    if uri.startswith("gs://"):
        match = GCS_URI.match(uri)
        if not match:
            raise _bad(flag, f"{uri!r} is not gs://BUCKET[/PATH] with a valid bucket name")
        if "//" in (match["path"] or ""):
            raise _bad(flag, f"{uri!r} has an empty path segment")
        return
    if uri.startswith("/"):
        # A path inside the pod: render.check_paths checks it against the rendered mounts.
        return
    raise _bad(flag, f"{uri!r} must be a gs:// URI or an absolute path inside the pod")


def validate_image(image: str) -> None:
    match = IMAGE_REF.match(image)
    if not match:
        raise _bad("--image", f"{image!r} is not an image reference (REGISTRY/PATH:TAG)")
    if not match["tag"] and not match["digest"]:
        raise _bad("--image", f"{image!r} has no tag or digest: name the exact build to run")
    if match["tag"] == "latest" and not match["digest"]:
        raise _bad("--image", f"{image!r}: 'latest' is not reproducible; use the git sha tag")


def validate(opts: LaunchOptions) -> None:
    """Raises LaunchError (exit 2) naming the first bad input."""
    validate_image(opts.image)
    validate_uri("--data", opts.data)
    validate_uri("--output", opts.output)
    if opts.data.rstrip("/") == opts.output.rstrip("/"):
        raise _bad("--output", "must differ from --data: the trainer would write into its input")
    if not 0 <= opts.gpus <= MAX_GPUS:
        raise _bad("--gpus", f"{opts.gpus} is outside 0..{MAX_GPUS}")
    if not 1 <= opts.workers <= MAX_WORKERS:
        raise _bad("--workers", f"{opts.workers} is outside 1..{MAX_WORKERS}")
    if len(opts.namespace) > 63 or not DNS_LABEL.match(opts.namespace):
        raise _bad("--namespace", f"{opts.namespace!r} is not a DNS-1123 label")
    if opts.queue is not None and (len(opts.queue) > 253 or not DNS_SUBDOMAIN.match(opts.queue)):
        raise _bad("--queue", f"{opts.queue!r} is not a valid LocalQueue name")
    if opts.name is not None and (len(opts.name) > MAX_NAME or not DNS_LABEL.match(opts.name)):
        raise _bad("--name", f"{opts.name!r} is not a DNS-1123 label of at most {MAX_NAME} chars")
    if len(opts.name_prefix) > 30 or not DNS_LABEL.match(opts.name_prefix):
        raise _bad("--name-prefix", f"{opts.name_prefix!r} is not a DNS-1123 label (<= 30 chars)")
    overlay_dir = opts.manifests / "overlays" / opts.overlay
    if not (overlay_dir / "kustomization.yaml").is_file():
        known = sorted(p.parent.name for p in (opts.manifests / "overlays").glob("*/kustom*"))
        raise _bad("--overlay", f"{opts.overlay!r} not found in {opts.manifests}/overlays {known}")
    for key in opts.trainer_env:
        if not TRAINER_ENV.match(key):
            raise _bad("--trainer-env", f"{key!r}: only TRAINER_* variables can be set")
        if key in MANAGED_ENV:
            raise _bad("--trainer-env", f"{key} is set by the launcher's own flags")
        if key == METRICS_ENV and opts.metrics:
            raise _bad(
                "--trainer-env",
                f"{key} is set by --metrics (the port its PodMonitoring scrapes); leave it out",
            )


def unknown_trainer_env(opts: LaunchOptions) -> list[str]:
    """One line per --trainer-env name the trainer does not read (it would ignore it)."""
    lines = []
    for key in sorted(set(opts.trainer_env) - TRAINER_VARIABLES):
        close = difflib.get_close_matches(key, sorted(TRAINER_VARIABLES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"--trainer-env {key}: the trainer reads no such variable, ignored{hint}")
    return lines


def job_name(opts: LaunchOptions) -> str:
    """The Job's name: --name, or a unique {prefix}-{sha7}-{random5} (a DNS-1123 label)."""
    if opts.name:
        return opts.name
    sha = re.sub(r"[^a-z0-9]", "", opts.git_sha.lower())[:7] or "nosha"
    # Random, not a timestamp: two CI runs in the same second still get distinct names.
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{opts.name_prefix}-{sha}-{suffix}"


def label_value(text: str) -> str:
    """`text` made a valid label value (63 chars of [A-Za-z0-9._-], alphanumeric ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("-_.")
    return cleaned or "unknown"


def submission_labels(opts: LaunchOptions) -> dict[str, str]:
    """Labels to find a run by: its git sha, its data (hashed: a URI is no label value), who."""
    return {
        f"{LABEL_PREFIX}git-sha": label_value(opts.git_sha),
        f"{LABEL_PREFIX}data-hash": hashlib.sha256(opts.data.encode()).hexdigest()[:16],
        f"{LABEL_PREFIX}submitted-by": label_value(opts.submitter),
    }


def submission_annotations(opts: LaunchOptions) -> dict[str, str]:
    """The full values the labels shorten."""
    return {
        f"{LABEL_PREFIX}git-sha": opts.git_sha,
        f"{LABEL_PREFIX}data": opts.data,
        f"{LABEL_PREFIX}output": opts.output,
        f"{LABEL_PREFIX}submitted-by": opts.submitter,
    }
