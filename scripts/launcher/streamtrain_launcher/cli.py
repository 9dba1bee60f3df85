"""`scripts/launch.py`: flags (each also an environment variable for CI) and the main flow.

    python scripts/launch.py --image R/st/trainer:SHA --data gs://b/d --output gs://b/m \\
        --overlay gke --wait --timeout 6h
    LAUNCH_IMAGE=... LAUNCH_DATA=... LAUNCH_OUTPUT=... LAUNCH_WAIT=true python scripts/launch.py

Validate everything, render with kustomize, then print (--dry-run) or submit and, with
--wait, follow the Job (or JobSet); the exit code says how it ended (see --help).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from streamtrain_launcher.exitcodes import EXIT_CODE_HELP, LaunchError, LaunchExit
from streamtrain_launcher.options import LaunchOptions, job_name, unknown_trainer_env, validate
from streamtrain_launcher.render import find_kubectl, render, to_yaml

logger = logging.getLogger("streamtrain.launch")

ENV_PREFIX = "LAUNCH_"
# The wheel ships k8s/ as package data; in a checkout it is a link to the repository's k8s/.
DEFAULT_MANIFESTS = Path(__file__).resolve().parent / "k8s"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '6h', '1d' as seconds."""
    match = DURATION.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m or 6h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_interval(text: str) -> float:
    """A duration like parse_duration's, or 0 for never."""
    match = DURATION.match(text.strip())
    if match and float(match[1]) == 0:
        return 0.0
    try:
        return parse_duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 60s or 5m, or 0 for no progress lines"
        ) from None


def parse_env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def default_git_sha(environ: Mapping[str, str], manifests: Path) -> str:
    if environ.get("GITHUB_SHA"):
        return environ["GITHUB_SHA"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=manifests,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def default_submitter(environ: Mapping[str, str]) -> str:
    if environ.get("GITHUB_ACTOR"):
        return f"github-{environ['GITHUB_ACTOR']}"
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, in the launcher's log format, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"launch: ERROR {message} (see --help)\n")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="launch.py",
        description="Render k8s/ for one training run, submit it, and follow it to the end. "
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG> "
        "(e.g. LAUNCH_IMAGE, LAUNCH_WAIT=true); flags win.",
        epilog=EXIT_CODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def env(name: str, default: str | None = None) -> str | None:
        return environ.get(ENV_PREFIX + name, default)

    def env_bool(name: str) -> bool:
        value = (env(name) or "").strip().lower()
        if value not in TRUE | FALSE:
            parser.error(f"{ENV_PREFIX}{name}={value!r}: use true or false")
        return value in TRUE

    what = parser.add_argument_group("what to train")
    what.add_argument("--image", default=env("IMAGE"), help="trainer image, REGISTRY/PATH:TAG")
    what.add_argument("--data", default=env("DATA"), help="gs:// URI of the training images")
    what.add_argument("--output", default=env("OUTPUT"), help="gs:// URI for the model")
    # String defaults go through `type` too, so a bad LAUNCH_GPUS is reported like a bad flag.
    what.add_argument("--gpus", type=int, default=env("GPUS", "2"), help="GPUs per worker (2)")
    what.add_argument("--workers", type=int, default=env("WORKERS", "1"), help="worker pods (1)")
    what.add_argument(
        "--trainer-env",
        type=parse_env_pair,
        action="append",
        default=[],
        metavar="TRAINER_X=VALUE",
        help="extra trainer setting, e.g. TRAINER_EPOCHS=20 (repeatable; "
        f"{ENV_PREFIX}TRAINER_ENV takes a comma-separated list)",
    )
    where = parser.add_argument_group("where")
    where.add_argument("--namespace", default=env("NAMESPACE", "streamtrain"))
    where.add_argument(
        "--overlay",
        default=env("OVERLAY", "gke"),
        help="k8s/overlays/<name>: gke, multi-worker, gke-multi-worker, kueue, jobset (gke)",
    )
    where.add_argument("--queue", default=env("QUEUE"), help="Kueue LocalQueue to submit to")
    where.add_argument(
        "--metrics",
        action="store_true",
        default=env_bool("METRICS"),
        help="add k8s/components/metrics: the trainer serves Prometheus metrics on port 9400 "
        "for GKE Managed Prometheus (its PodMonitoring and NetworkPolicy are per namespace, "
        "applied once with kubectl: docs/operations.md)",
    )
    where.add_argument("--name", default=env("NAME"), help="exact Job name (default: unique)")
    where.add_argument("--name-prefix", default=env("NAME_PREFIX", "streamtrain"))
    where.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="default: $KUBECONFIG")
    where.add_argument("--context", default=env("CONTEXT"), help="kubeconfig context")
    where.add_argument(
        "--manifests", type=Path, default=Path(env("MANIFESTS") or DEFAULT_MANIFESTS)
    )
    where.add_argument("--kubectl", default=env("KUBECTL"), help="kubectl binary for kustomize")
    how = parser.add_argument_group("how")
    how.add_argument(
        "--dry-run",
        action="store_true",
        default=env_bool("DRY_RUN"),
        help="print the manifests (for kubectl apply -f -) and submit nothing",
    )
    how.add_argument(
        "--wait",
        action="store_true",
        default=env_bool("WAIT"),
        help="follow the Job (or JobSet) until it completes or fails",
    )
    how.add_argument(
        "--timeout",
        type=parse_duration,
        default=env("TIMEOUT"),
        help="with --wait: give up after this long (90s, 30m, 6h)",
    )
    how.add_argument(
        "--progress-every",
        type=parse_interval,
        default=env("PROGRESS_EVERY", "60s"),
        help="with --wait: print the chief's progress, images/s and ETA this often, and as "
        "the last line (60s; 0: never)",
    )
    how.add_argument("--git-sha", default=env("GIT_SHA"), help="default: $GITHUB_SHA or git")
    how.add_argument("--submitter", default=env("SUBMITTER"), help="default: $GITHUB_ACTOR/user")
    return parser


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> LaunchOptions:
    for flag in ("image", "data", "output"):
        if not getattr(args, flag):
            raise LaunchError(
                f"--{flag} is required (or {ENV_PREFIX}{flag.upper()})", LaunchExit.BAD_INPUT
            )
    trainer_env = dict(args.trainer_env)
    for item in filter(None, (environ.get(ENV_PREFIX + "TRAINER_ENV") or "").split(",")):
        key, _, value = item.partition("=")
        trainer_env.setdefault(key.strip(), value)
    manifests = args.manifests
    return LaunchOptions(
        image=args.image,
        data=args.data,
        output=args.output,
        manifests=manifests,
        overlay=args.overlay,
        gpus=args.gpus,
        workers=args.workers,
        namespace=args.namespace,
        queue=args.queue or None,
        metrics=args.metrics,
        name=args.name or None,
        name_prefix=args.name_prefix,
        git_sha=args.git_sha or default_git_sha(environ, manifests),
        submitter=args.submitter or default_submitter(environ),
        trainer_env=trainer_env,
    )


def launch(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Runs the launcher; returns its exit code (LaunchExit). Errors are logged in one line.
    `clock` paces the progress lines (tests pass their own)."""
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args, environ)
        validate(opts)
        for line in unknown_trainer_env(opts):
            logger.warning("%s", line)
        name = job_name(opts)
        docs = render(opts, name=name, kubectl=find_kubectl(args.kubectl))
        if args.dry_run:
            out.write(to_yaml(docs))
            return LaunchExit.OK
        # Imported here: --dry-run and --help need no API client.
        from streamtrain_launcher.follow import follow_job
        from streamtrain_launcher.kube import connect, submit

        api = connect(kubeconfig=args.kubeconfig, context=args.context)
        with api:
            kind, _ = submit(api, docs, namespace=opts.namespace)
            print(
                f"{kind.lower()}/{name} submitted to namespace {opts.namespace}",
                file=out,
                flush=True,
            )
            if not args.wait:
                return LaunchExit.OK
            return follow_job(
                api,
                namespace=opts.namespace,
                name=name,
                timeout_s=args.timeout,
                out=out,
                kind=kind,
                progress_every_s=args.progress_every,
                clock=clock,
            )
    except LaunchError as e:
        logger.error("%s", e)
        return e.exit_code


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="launch: %(levelname)s %(message)s")
    # The kubernetes client logs each retry at WARNING; the launcher reports failures itself.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    sys.exit(launch(argv))
