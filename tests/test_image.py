"""The real image: built with buildah, run with podman as the Kubernetes Job runs it.

`scripts/image/build.sh cpu` builds localhost/streamtrain:cpu from the Dockerfile (a no-op when
nothing changed; on a stand-in for the base image where no registry is reachable) and
`scripts/image/run.sh` runs it with the Job's security context: read-only root, UID 10001, no
capabilities, no privilege escalation, tmpfs /tmp and cache, memory-backed /dev/shm. The
container trains from gs:// on a gcp-storage-emulator reached over the host network, is stopped
with SIGTERM (exit 143), and a second container on the same output resumes and finishes.

    make image-test             # builds if needed, then this file with its report shown
    .venv/bin/pytest -s tests/test_image.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainer.dev.emulator import Emulator
from trainer.dev.synthetic import write_learnable_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "image"
IMAGE = os.environ.get("STREAMTRAIN_IMAGE", "localhost/streamtrain:cpu")
# A regression guard, not a target: 2.01 GB with tensorflow-cpu 2.21 and no kubernetes client.
MAX_CPU_IMAGE_BYTES = 2_400_000_000
STAND_IN_LABEL = "io.streamtrain.base-stand-in"
COMMON = ("--image-size", "32", "--model", "small_cnn", "--log-every", "2")


def requirement_names(lines: list[str]) -> set[str]:
    """Normalized project names of requirement lines (no options, comments or extras)."""
    names = set()
    for raw in lines:
        line = raw.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-"))
    return names


def test_runtime_requirements_are_the_trainer_dependencies() -> None:
    # The image installs them in its cached TensorFlow layer; the project install adds none.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = requirement_names(pyproject["project"]["dependencies"])
    listed = requirement_names((ROOT / "requirements" / "runtime.txt").read_text().splitlines())
    assert listed == declared
    pinned = requirement_names((ROOT / "requirements" / "constraints.txt").read_text().splitlines())
    assert listed <= pinned, "every runtime dependency has a pin in constraints.txt"


def report(capsys: pytest.CaptureFixture[str], *lines: str) -> None:
    """Print past pytest's capture, so that `make test` shows the figures too."""
    with capsys.disabled():
        print("\n" + "\n".join(f"[image] {line}" for line in lines))


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    """Builds (or finds up to date) the CPU image; yields its inspect record and build line."""
    tools = subprocess.run(
        [str(SCRIPTS / "tools.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    if tools.returncode != 0:
        message = f"buildah/podman/runc/mmdebstrap unavailable:\n{tools.stderr[-2000:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    started = time.monotonic()
    build = subprocess.run(
        [str(SCRIPTS / "build.sh"), "cpu"],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "STREAMTRAIN_IMAGE": IMAGE},
        check=False,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    inspect = podman("image", "inspect", IMAGE)
    assert inspect.returncode == 0, inspect.stderr
    record = json.loads(inspect.stdout)[0]
    base = subprocess.run(
        [str(SCRIPTS / "base.sh")], capture_output=True, text=True, timeout=60, check=True
    )
    record["base"] = base.stdout.strip()
    record["build_line"] = build.stderr.strip().splitlines()[-1]
    record["build_seconds"] = time.monotonic() - started
    return record


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with Emulator() as running:
        yield running.url


@pytest.fixture(scope="module")
def gcs(emulator: str) -> Iterator[Any]:
    """A google-cloud-storage client bound to the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="streamtrain-image-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator},
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def bucket(gcs: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh bucket holding the learnable dataset under data/ (3 classes of 40 images)."""
    root = tmp_path_factory.mktemp("shapes")
    write_learnable_dataset(str(root), classes=3, per_class=40, min_size=32, max_size=96, seed=4)
    created = gcs.create_bucket(f"image-{uuid.uuid4().hex[:12]}")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        created.blob(f"data/{path.relative_to(root).as_posix()}").upload_from_filename(str(path))
    return created


def container(name: str, emulator: str, *train_args: str) -> list[str]:
    """The podman command that runs the image's `trainer train` as the Job does."""
    return [
        str(SCRIPTS / "run.sh"),
        "--name",
        name,
        "--network",
        "host",
        "--env",
        f"STORAGE_EMULATOR_HOST={emulator}",
        IMAGE,
        "train",
        *train_args,
    ]


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Container names a test uses; any still there afterwards are removed."""
    used: list[str] = []
    yield used
    for name in used:
        podman("rm", "--force", "--ignore", name)


def messages(stderr: str) -> str:
    """The trainer's log messages, one a line: run.sh asks for JSON lines as the Job does."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):  # TensorFlow's own C++ logging is not JSON
            record = json.loads(line)
            assert {"severity", "message"} <= record.keys(), line
            found.append(record["message"])
    return "\n".join(found)


def objects(bucket: Any, prefix: str) -> set[str]:
    return {b.name.removeprefix(prefix) for b in bucket.list_blobs(prefix=prefix)}


@pytest.mark.slow
def test_image_runs_the_trainer_as_uid_10001_without_kubernetes_or_build_leftovers(
    image: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["trainer"] and config["Cmd"] == ["train"]
    assert not any(e.startswith(("PIP_CERT=", "PIP_CONFIG_FILE=")) for e in config["Env"])
    labels = config.get("Labels") or {}
    stand_in = labels.get(STAND_IN_LABEL)

    probe = subprocess.run(
        [str(SCRIPTS / "run.sh"), "-i", "--entrypoint", "python", IMAGE, "-"],
        stdin=(SCRIPTS / "packages.py").open(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    dists = found["distributions"]
    size = int(image["Size"])
    lines = [
        image["build_line"] + f" (fixture {image['build_seconds']:.0f} s)",
        f"image {IMAGE}: {size / 1e9:.2f} GB; Python {found['python']} "
        f"({found['executable']}); site-packages {found['site_packages_bytes'] / 1e6:.0f} MB "
        f"in {len(dists)} distributions; largest:",
        *(
            f"  {name:28s} {d['version']:12s} {d['bytes'] / 1e6:8.1f} MB"
            for name, d in list(dists.items())[:10]
        ),
    ]
    if stand_in:
        lines.append(
            f"NOTE: the base image is a STAND-IN, not the Dockerfile's FROM image: {stand_in}"
        )
    report(capsys, *lines)

    assert found["python"].startswith("3.11."), "the Dockerfile's base is Python 3.11"
    assert "streamtrain" in dists and "tensorflow-cpu" in dists
    assert "tensorflow" not in dists, "the CPU variant has no CUDA TensorFlow"
    # The launcher is a distribution of its own: the trainer image has no Kubernetes client.
    assert "kubernetes" not in dists and "streamtrain-launcher" not in dists
    assert found["leftovers"] == [], "pip configuration or build files left in the image"
    # The host's CA bundle was mounted over the base's during the build only.
    base = podman(
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--ulimit",
        "nofile=16384:16384",
        "--ulimit",
        "nproc=4096:4096",
        "--entrypoint",
        "sha256sum",
        image["base"],
        "/etc/ssl/certs/ca-certificates.crt",
    )
    assert base.returncode == 0, base.stderr
    assert base.stdout.split()[0] == found["ca_bundle_sha256"]
    assert size < MAX_CPU_IMAGE_BYTES, f"{size / 1e9:.2f} GB"


@pytest.mark.slow
def test_trains_from_gcs_with_a_read_only_root_and_writes_every_output(
    image: dict[str, Any],
    emulator: str,
    bucket: Any,
    names: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    names.append(f"streamtrain-test-{uuid.uuid4().hex[:8]}")
    out = f"gs://{bucket.name}/run"
    started = time.monotonic()
    proc = subprocess.run(
        container(
            names[0],
            emulator,
            *("--data", f"gs://{bucket.name}/data", "--output", out),
            *("--epochs", "6", "--batch-size", "16", "--cpu-replicas", "2"),
            *("--min-val-accuracy", "0.85", "--learning-rate", "0.003", *COMMON),
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = messages(proc.stderr)
    assert "replicas 2" in log and "per replica 8" in log
    names_found = objects(bucket, "run/")
    for expected in ("model.keras", "labels.txt", "metrics.json", "BLESSED", "_SUCCESS"):
        assert expected in names_found, expected
    assert any(n.startswith("checkpoints/ckpt-") for n in names_found)
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in names_found)
    assert not any(n.startswith("quarantine/") for n in names_found)
    metrics = json.loads(bucket.blob("run/metrics.json").download_as_bytes())
    # The serving export: a numbered version under the model base path saved_model/.
    version = metrics["exported"]["version"]
    assert metrics["exported"]["saved_model"] == f"{out}/saved_model/{version}"
    assert f"saved_model/{version}/saved_model.pb" in names_found
    assert any(n.startswith(f"saved_model/{version}/variables/") for n in names_found)
    assert metrics["replicas"] == 2 and metrics["workers"] == 1
    assert len(metrics["history"]) == 6
    assert metrics["final"]["val_accuracy"] >= 0.85
    assert metrics["final"]["val_samples"] == 24
    assert metrics["quality_gate"]["passed"] is True
    assert bucket.blob("run/labels.txt").download_as_text().split() == [
        "circle",
        "square",
        "stripes",
    ]
    report(
        capsys,
        f"train: exit 0 in {seconds:.1f} s (container start to exit, 6 epochs of 96 images, "
        f"2 CPU replicas), val_accuracy {metrics['final']['val_accuracy']:.3f}, "
        f"{metrics['images_per_s']:.0f} images/s, {len(names_found)} objects under {out}/",
    )


@pytest.mark.slow
def test_sigterm_exits_143_and_a_second_container_resumes_from_the_checkpoint(
    image: dict[str, Any],
    emulator: str,
    bucket: Any,
    names: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = f"gs://{bucket.name}/preempted"
    args = (
        *("--data", f"gs://{bucket.name}/data", "--output", out),
        *("--epochs", "2", "--batch-size", "4", "--cpu-replicas", "2"),
        # No periodic checkpoint before the signal: the one that resumes is SIGTERM's.
        *("--checkpoint-every", "1000", "--val-split", "0.2", *COMMON),
    )
    names.extend([f"streamtrain-test-{uuid.uuid4().hex[:8]}" for _ in range(2)])
    first = subprocess.Popen(
        container(names[0], emulator, *args), stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    stop: subprocess.Popen[str] | None = None
    started = time.monotonic()
    try:
        assert first.stderr is not None
        for line in first.stderr:
            lines.append(line)
            if stop is None and re.search(r"epoch 1/2 step 10/24", line):
                # podman stop: SIGTERM, then SIGKILL after the Job's grace period.
                stop = subprocess.Popen(
                    ["podman", "stop", "--time", "180", names[0]],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
        code = first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    stopped_after = time.monotonic() - started
    log = messages("".join(lines))
    assert stop is not None, "training never reached step 10:\n" + log[-4000:]
    assert stop.wait(timeout=60) == 0, stop.stderr.read() if stop.stderr else ""
    assert code == 143, log[-4000:]
    assert "SIGTERM received" in log and "checkpoint written" in log
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+)", log).group(1))
    assert 10 <= stopped_at < 24, "stopped in the middle of the first epoch"
    before = objects(bucket, "preempted/")
    assert "_SUCCESS" not in before
    assert any(n.startswith("checkpoints/ckpt-") for n in before)

    started = time.monotonic()
    second = subprocess.run(
        container(names[1], emulator, *args),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    resumed_seconds = time.monotonic() - started
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = f"resumed from checkpoint at step {stopped_at}: epoch 1, batch {stopped_at}"
    assert resumed in messages(second.stderr), second.stderr[-4000:]
    after = objects(bucket, "preempted/")
    for expected in ("model.keras", "metrics.json", "_SUCCESS"):
        assert expected in after, expected
    metrics = json.loads(bucket.blob("preempted/metrics.json").download_as_bytes())
    assert f"saved_model/{metrics['exported']['version']}/saved_model.pb" in after
    assert [h["samples"] for h in metrics["history"]] == [96, 96]
    report(
        capsys,
        f"preemption: podman stop at step {stopped_at}/24 of epoch 1 -> exit {code} "
        f"({stopped_after:.1f} s from start); second container resumed at step {stopped_at} "
        f"-> exit {second.returncode} in {resumed_seconds:.1f} s",
    )
