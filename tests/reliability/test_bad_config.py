"""Bad configuration and environment, end to end: `python -m trainer train ...` as a subprocess.

Each case must exit with its documented code (README "Exit codes"), print exactly one
`error: ...` line naming the flag or object as the last line of stderr, print no traceback,
finish within 10 s, and fail before TensorFlow touches a device:

* "config" cases fail in argument/config validation: stderr is that one line and nothing else;
* "data" cases fail in `trainer.job.run()` while listing or probing storage, before Keras and
  TensorFlow load: stderr may hold our INFO records before the error, but never the
  "devices:" or "strategy:" lines that follow device setup;
* the one "device" case (`--expect-gpus 1` on this GPU-less machine) is about devices, so it
  imports TensorFlow; TensorFlow's C++ start-up notices are the only other lines allowed.

GCS cases run against the emulator; the 403 cases go through a FaultProxy that answers 403 for
one bucket (reads) and for uploads to another (writes).

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_bad_config.py
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from support.httpproxy import FaultProxy

from trainer.dev.emulator import free_port

ROOT = Path(__file__).resolve().parents[2]
# The bound: a configuration mistake is reported within 10 s.
LIMIT_S = 10.0
OUR_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) ")
# TensorFlow's C++ runtime writes these through absl before any Python logging is set up;
# TF_CPP_MIN_LOG_LEVEL does not silence them (TF 2.21).
TF_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\])"
)
DEVICE_MARKERS = ("strategy:", "devices:")


@dataclass(frozen=True)
class Case:
    name: str
    injected: str
    args: tuple[str, ...]
    code: int
    names: tuple[str, ...]  # what the error line must name (flags, URIs, values)
    stage: str = "config"  # config | data | device
    env: dict[str, str] = field(default_factory=dict)


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory, gcs_emulator):
    """Local folders, manifests and config files, buckets on the emulator, a 403 proxy."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    tmp = tmp_path_factory.mktemp("badconfig")
    for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (tmp / "good" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp / "good" / cls / f"{i}.png").write_bytes(_png(colour))
    (tmp / "one" / "cat").mkdir(parents=True)
    (tmp / "one" / "cat" / "0.png").write_bytes(_png((1, 2, 3)))
    (tmp / "empty").mkdir()
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "notes.txt").write_text("cat/0.png\n")
    good = tmp / "good"
    (tmp / "bad-line.csv").write_text(
        f"uri,label\n{good}/cat/0.png,cat\n{good}/dog/0.png,dog,extra\n"
    )
    (tmp / "bad-json.jsonl").write_text(
        f'{{"uri": "{good}/cat/0.png", "label": "cat"}}\n{{"uri": "{good}/dog/0.png", label}}\n'
    )
    (tmp / "bird.csv").write_text(
        f"{good}/cat/0.png,cat\n{good}/dog/0.png,dog\n{good}/dog/1.png,bird\n"
    )
    (tmp / "dup.csv").write_text(
        f"{good}/cat/0.png,cat\n{good}/dog/0.png,dog\n{good}/cat/0.png,cat\n"
    )
    (tmp / "broken.yaml").write_text("epochs: [3\nbatch_size: 8\n")
    (tmp / "typo.yaml").write_text("epoch: 3\n")
    (tmp / "config-dir.yaml").mkdir()

    client = storage.Client(
        project="streamtrain-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator},
    )
    suffix = uuid.uuid4().hex[:10]
    names = {"bucket": f"cfg-{suffix}", "locked": f"locked-{suffix}", "ro": f"ro-{suffix}"}
    for bucket_name in names.values():
        bucket = client.create_bucket(bucket_name)
        for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
            for i in range(2):
                bucket.blob(f"data/{cls}/{i}.png").upload_from_string(_png(colour))
    main = client.bucket(names["bucket"])
    main.blob("one/cat/0.png").upload_from_string(_png((1, 2, 3)))
    main.blob("dup.csv").upload_from_string(
        "data/cat/0.png,cat\ndata/dog/0.png,dog\ndata/cat/0.png,cat\n"
    )
    client.close()
    # Reads of the locked bucket and uploads into the read-only one are refused.
    proxy = FaultProxy(
        upstreams=[gcs_emulator],
        answer_status=403,
        answer_paths=rf"/b/{names['locked']}/|^POST /upload/storage/v1/b/{names['ro']}/",
    ).start()
    yield {
        "tmp": str(tmp),
        "good": str(good),
        "emulator": gcs_emulator,
        "proxy": proxy.url,
        "closed": f"http://127.0.0.1:{free_port()}",
        **names,
    }
    proxy.close()


OUT = ("--output", "{tmp}/out")
GOOD = ("--data", "{good}", *OUT)
GCS = {"STORAGE_EMULATOR_HOST": "{emulator}"}
PROXY = {"STORAGE_EMULATOR_HOST": "{proxy}"}

CASES = [
    # --- flags, environment and config files: rejected before any I/O -----------------------
    Case("missing --data", "no --data, no TRAINER_DATA", OUT, 2, ("--data", "required")),
    Case(
        "unknown URI scheme",
        "--data s3://bkt/images",
        ("--data", "s3://bkt/images", *OUT),
        2,
        ("--data", "s3://"),
    ),
    Case(
        "malformed bucket name",
        "--data gs://Bad_Bucket/x",
        ("--data", "gs://Bad_Bucket/x", *OUT),
        2,
        ("--data", "Bad_Bucket"),
    ),
    Case(
        "local --data missing",
        "--data {tmp}/nowhere",
        ("--data", "{tmp}/nowhere", *OUT),
        2,
        ("--data", "{tmp}/nowhere"),
    ),
    Case(
        "--data a plain file",
        "--data notes.txt (neither folder nor manifest)",
        ("--data", "{tmp}/notes.txt", *OUT),
        2,
        ("--data", "notes.txt"),
    ),
    Case(
        "batch smaller than replicas",
        "--batch-size 1 --cpu-replicas 2",
        (*GOOD, "--batch-size", "1", "--cpu-replicas", "2"),
        2,
        ("--batch-size", "--cpu-replicas"),
    ),
    Case("epochs zero", "--epochs 0", (*GOOD, "--epochs", "0"), 2, ("--epochs", "0")),
    Case("epochs negative", "--epochs -3", (*GOOD, "--epochs=-3"), 2, ("--epochs", "-3")),
    Case("image size zero", "--image-size 0", (*GOOD, "--image-size", "0"), 2, ("--image-size",)),
    Case("batch size zero", "--batch-size 0", (*GOOD, "--batch-size", "0"), 2, ("--batch-size",)),
    Case(
        "validation split out of range",
        "--val-split 1.5",
        (*GOOD, "--val-split", "1.5"),
        2,
        ("--val-split", "1.5"),
    ),
    Case(
        "unknown model",
        "--model resnet9000",
        (*GOOD, "--model", "resnet9000"),
        2,
        ("--model", "resnet9000"),
    ),
    Case("unknown flag", "--epoch 3 (typo)", (*GOOD, "--epoch", "3"), 2, ("--epoch", "--epochs")),
    Case(
        "bad environment variable",
        "TRAINER_EPOCHS=ten",
        GOOD,
        2,
        ("TRAINER_EPOCHS", "ten"),
        env={"TRAINER_EPOCHS": "ten"},
    ),
    Case(
        "unwritable local output",
        "--output under a regular file",
        ("--data", "{good}", "--output", "{tmp}/a-file/out"),
        2,
        ("--output", "a-file"),
    ),
    Case(
        "conflicting flags: CPU split vs GPUs",
        "--cpu-replicas 2 --expect-gpus 1",
        (*GOOD, "--cpu-replicas", "2", "--expect-gpus", "1"),
        2,
        ("--cpu-replicas", "--expect-gpus"),
    ),
    Case("conflicting flags: -v and -q", "-v -q", (*GOOD, "-v", "-q"), 2, ("-q", "-v")),
    Case(
        "quality gate without validation",
        "--min-val-accuracy 0.9 --val-split 0",
        (*GOOD, "--min-val-accuracy", "0.9", "--val-split", "0"),
        2,
        ("--min-val-accuracy", "--val-split"),
    ),
    Case(
        "request timeout over the retry deadline",
        "--request-timeout-s 30 --storage-deadline-s 10",
        (*GOOD, "--request-timeout-s", "30", "--storage-deadline-s", "10"),
        2,
        ("--request-timeout-s", "--storage-deadline-s"),
    ),
    Case(
        "multi-worker without its service",
        "--num-workers 2, no --worker-service",
        (*GOOD, "--num-workers", "2"),
        2,
        ("--num-workers", "--worker-service"),
    ),
    Case(
        "init weights not a model file",
        "--init-weights w.txt",
        (*GOOD, "--init-weights", "{tmp}/notes.txt"),
        2,
        ("--init-weights",),
    ),
    Case(
        "config file missing",
        "--config missing.yaml",
        (*GOOD, "--config", "{tmp}/missing.yaml"),
        2,
        ("--config", "missing.yaml"),
    ),
    Case(
        "config file unreadable (a directory)",
        "--config naming a directory",
        (*GOOD, "--config", "{tmp}/config-dir.yaml"),
        2,
        ("--config", "config-dir.yaml"),
    ),
    Case(
        "config file not YAML",
        "--config with an unclosed [",
        (*GOOD, "--config", "{tmp}/broken.yaml"),
        2,
        ("--config", "broken.yaml", "YAML"),
    ),
    Case(
        "config file unknown key",
        "config key `epoch:` (typo)",
        (*GOOD, "--config", "{tmp}/typo.yaml"),
        2,
        ("epoch", "epochs"),
    ),
    # --- data and storage: rejected in setup, before TensorFlow --------------------------------
    Case(
        "missing bucket",
        "--data gs://no-such-bucket-… (emulator)",
        ("--data", "gs://no-such-bucket-{bucket}/data", *OUT),
        2,
        ("no-such-bucket-{bucket}",),
        "data",
        GCS,
    ),
    Case(
        "403 on the bucket",
        "every request to the bucket answered 403 by the proxy",
        ("--data", "gs://{locked}/data", *OUT),
        2,
        ("gs://{locked}/data", "permission denied"),
        "data",
        PROXY,
    ),
    Case(
        "empty prefix",
        "--data gs://BUCKET/nothing-here",
        ("--data", "gs://{bucket}/nothing-here", *OUT),
        2,
        ("gs://{bucket}/nothing-here",),
        "data",
        GCS,
    ),
    Case(
        "one class (gs://)",
        "a prefix with only cat/",
        ("--data", "gs://{bucket}/one", *OUT),
        2,
        ("gs://{bucket}/one", "one class"),
        "data",
        GCS,
    ),
    Case(
        "empty local folder",
        "--data an empty directory",
        ("--data", "{tmp}/empty", *OUT),
        2,
        ("{tmp}/empty",),
        "data",
    ),
    Case(
        "manifest line does not parse (CSV)",
        "line 3 has three fields",
        ("--data", "{tmp}/bad-line.csv", *OUT),
        2,
        ("bad-line.csv:3",),
        "data",
    ),
    Case(
        "manifest line does not parse (JSONL)",
        "line 2 is not JSON",
        ("--data", "{tmp}/bad-json.jsonl", *OUT),
        2,
        ("bad-json.jsonl:2",),
        "data",
    ),
    Case(
        "manifest label not in --classes",
        "label 'bird' with --classes cat,dog",
        ("--data", "{tmp}/bird.csv", "--classes", "cat,dog", *OUT),
        2,
        ("bird.csv:3", "'bird'"),
        "data",
    ),
    Case(
        "class folder not in --classes",
        "folders cat/, dog/ with --classes cat,fox",
        ("--data", "{good}", "--classes", "cat,fox", *OUT),
        2,
        ("fox",),
        "data",
    ),
    Case(
        "duplicate URIs (local manifest)",
        "line 3 repeats line 1",
        ("--data", "{tmp}/dup.csv", *OUT),
        2,
        ("dup.csv:3", "duplicate"),
        "data",
    ),
    Case(
        "duplicate URIs (gs:// manifest)",
        "line 3 repeats line 1",
        ("--data", "gs://{bucket}/dup.csv", *OUT),
        2,
        ("gs://{bucket}/dup.csv:3", "duplicate"),
        "data",
        GCS,
    ),
    Case(
        "missing manifest object",
        "--data gs://BUCKET/absent.csv",
        ("--data", "gs://{bucket}/absent.csv", *OUT),
        2,
        ("gs://{bucket}/absent.csv",),
        "data",
        GCS,
    ),
    Case(
        "unwritable gs:// output",
        "uploads to the output bucket answered 403 by the proxy",
        ("--data", "gs://{bucket}/data", "--output", "gs://{ro}/run"),
        2,
        ("gs://{ro}/run", "permission denied"),
        "data",
        PROXY,
    ),
    Case(
        "output bucket missing",
        "--output gs://no-such-out-…",
        ("--data", "gs://{bucket}/data", "--output", "gs://no-such-out-{bucket}/run"),
        2,
        ("no-such-out-{bucket}", "does not exist"),
        "data",
        GCS,
    ),
    Case(
        "object store unreachable",
        "STORAGE_EMULATOR_HOST at a closed port, deadline 2 s",
        (
            "--data",
            "gs://{bucket}/data",
            *OUT,
            "--storage-deadline-s",
            "2",
            "--request-timeout-s",
            "1",
        ),
        5,
        ("gs://{bucket}/data", "unavailable"),
        "data",
        {"STORAGE_EMULATOR_HOST": "{closed}"},
    ),
    # --- devices -------------------------------------------------------------------------------
    Case(
        "--expect-gpus unmet",
        "--expect-gpus 1 on a machine without GPUs",
        (*GOOD, "--expect-gpus", "1"),
        4,
        ("--expect-gpus", "0 GPU"),
        "device",
    ),
]


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRAINER_", "AIP_")) and k != "STORAGE_EMULATOR_HOST"
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_configuration_exits_with_one_line(case, world, row):
    fill = lambda text: text.format(**world)  # noqa: E731
    short = lambda text: text.replace(world["tmp"] + "/", "")  # noqa: E731
    record = functools.partial(
        row, area="Bad configuration", case=case.name, injected=short(fill(case.injected))
    )
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "trainer", "train", *(fill(a) for a in case.args)],
            cwd=ROOT,
            env=_environment({k: fill(v) for k, v in case.env.items()}),
            capture_output=True,
            text=True,
            timeout=LIMIT_S,  # the bound
            check=False,
        )
    except subprocess.TimeoutExpired:
        record(observed=f"no exit within {LIMIT_S:g} s")
        raise
    seconds = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    others = [line for line in lines if not line.startswith("error: ")]
    tf_notices = [line for line in others if TF_NOTICE.match(line)]
    our_logs = [line for line in others if OUR_LOG.match(line)]
    before = {
        "config": f"{len(others)} other stderr lines",
        "data": f"{len(our_logs)} INFO lines before it, "
        f"{sum(m in result.stderr for m in DEVICE_MARKERS)} device-setup lines",
        "device": f"{len(tf_notices)} TensorFlow start-up notices before it",
    }[case.stage]
    # Recorded before the checks, so that a failing case still shows what happened.
    record(
        observed=f"exit {result.returncode} in {seconds:.1f} s, {before}: "
        f"`{short(lines[-1] if lines else '(nothing on stderr)')}`"
    )

    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    error = errors[0]
    for name in case.names:
        assert fill(name) in error, f"{fill(name)!r} not named in: {error}"
    if case.stage == "config":
        assert lines == [error], result.stderr
    else:
        assert all(" INFO " in line for line in our_logs), result.stderr
        allowed = len(our_logs) + (len(tf_notices) if case.stage == "device" else 0)
        assert allowed == len(others), result.stderr
    if case.stage == "data":
        assert not any(marker in result.stderr for marker in DEVICE_MARKERS), result.stderr
