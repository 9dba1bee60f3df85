"""Damaged packed datasets and a hostile environment, end to end: `python -m trainer train` as a
subprocess. Each case ends with its documented exit code and one `error: ...` line naming the
field, file or flag (no traceback), or with the sample quarantined as --on-corrupt says.

Full and read-only disks are real tmpfs mounts (root only; skipped with the reason otherwise);
gs:// cases run against the GCS emulator; `--weights imagenet` goes through an HTTPS proxy
address where nothing listens, so the download fails with or without internet access.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_environment.py
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.data.storage import Storage
from trainer.dev.emulator import EMULATOR_ENV, free_port
from trainer.dev.synthetic import write_learnable_dataset
from trainer.pack.writer import PackConfig, pack

ROOT = Path(__file__).resolve().parents[2]
PACKED = "Data safety: packed datasets"
ENVIRONMENT = "Environment failures"
TRAIN = ("--epochs", "1", "--batch-size", "4", "--image-size", "32", "--model", "linear")
TRAIN += ("--weights", "none", "--decode-processes", "0", "--val-split", "0.25")


def _trainer(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """Runs `python -m trainer train ...`; returns (exit code, stderr lines, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "train", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr.splitlines(), time.monotonic() - started


def _pythonpath() -> str:
    return os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def _short(text: str, tmp_path: Path) -> str:
    """`text` with pytest's base temporary folder spelled TMP, for the report."""
    return text.replace(str(tmp_path.parent), "TMP")


def _one_error_line(lines: list[str]) -> str:
    """The last line, checked to be the only error and no traceback."""
    assert not any(line.startswith("Traceback") for line in lines), "\n".join(lines[-30:])
    assert lines and lines[-1].startswith("error: "), "\n".join(lines[-30:])
    return lines[-1]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """24 images of two classes packed into about 8 shards."""
    tmp = tmp_path_factory.mktemp("packed")
    write_learnable_dataset(str(tmp / "src"), classes=2, per_class=12, seed=3)
    pack(
        PackConfig(source=str(tmp / "src"), output=str(tmp / "packed"), shard_size_mb=0.01),
        Storage(),
    )
    return tmp / "packed"


def _variant(packed: Path, tmp: Path, edit, *, indent: int | None = None) -> Path:
    """A copy of the packed dataset whose index.json `edit(doc, folder)` changed."""
    folder = tmp / "variant"
    shutil.copytree(packed, folder)
    doc = json.loads((folder / "index.json").read_text())
    edit(doc, folder)
    separators = None if indent else (",", ":")
    (folder / "index.json").write_text(json.dumps(doc, indent=indent, separators=separators))
    return folder


def _two_in_one_shard(doc: dict) -> tuple[int, int]:
    shards = doc["samples"]["shard"]
    return next((i, j) for i in range(len(shards)) for j in range(i) if shards[i] == shards[j])


def _label(doc, _):
    doc["samples"]["label"][3] = 7


def _classes(doc, _):
    doc["class_names"] = [doc["class_names"][0]] * 2


def _dotdot(doc, folder):
    shutil.copy(folder / doc["shards"][0]["name"], folder.parent / "x.tar")
    doc["shards"][0]["name"] = "../x.tar"


def _absolute(doc, _):
    doc["shards"][0]["name"] = "/etc/passwd"


def _negative(doc, _):
    doc["samples"]["offset"][0] = -512


def _beyond(doc, _):
    doc["samples"]["size"][0] = 10**9


def _overlap(doc, _):
    i, j = _two_in_one_shard(doc)
    doc["samples"]["offset"][i] = doc["samples"]["offset"][j]


BAD_INDEXES = [
    ("label out of range", _label, "a label 7 with 2 class names", "samples.label[3]"),
    ("class names repeated", _classes, "class_names [circle, circle]", "class_names"),
    ("shard outside the root", _dotdot, "a shard named ../x.tar (which exists)", "../x.tar"),
    ("absolute shard path", _absolute, "a shard named /etc/passwd", "/etc/passwd"),
    ("negative offset", _negative, "samples.offset -512", "samples.offset[0]"),
    ("sample beyond its shard", _beyond, "samples.size 10^9", "samples.size[0]"),
    ("overlapping samples", _overlap, "two samples at one offset", "samples.offset"),
]


@pytest.mark.parametrize(
    "case,edit,injected,names", BAD_INDEXES, ids=[c[0].replace(" ", "-") for c in BAD_INDEXES]
)
def test_bad_packed_index(row, packed, tmp_path, case, edit, injected, names):
    data = _variant(packed, tmp_path, edit)
    code, lines, _ = _trainer("--data", str(data), "--output", str(tmp_path / "out"), *TRAIN)
    line = _one_error_line(lines)
    assert code == 2 and names in line and "index.json" in line, line
    assert not any("devices:" in x for x in lines)  # refused before TensorFlow started
    row(
        area=PACKED,
        case=case,
        injected=f"index.json with {injected}",
        observed=f"exit 2: {_short(line, tmp_path)}",
    )


def test_pretty_printed_index_is_packed(row, packed, tmp_path):
    data = _variant(packed, tmp_path, lambda doc, _: None, indent=2)
    code, lines, _ = _trainer("--data", str(data), "--output", str(tmp_path / "out"), *TRAIN)
    assert code == 0, "\n".join(lines[-20:])
    assert any("is packed: 24 samples" in x for x in lines)
    row(
        area=PACKED,
        case="pretty-printed index.json",
        injected="index.json re-written with json.dumps(indent=2)",
        observed="exit 0: read as the packed dataset (24 samples), not as class folders",
    )


def test_missing_local_shard_is_quarantined(row, packed, tmp_path):
    data = _variant(packed, tmp_path, lambda doc, _: None)
    gone = json.loads((data / "index.json").read_text())["shards"][1]["name"]
    (data / gone).unlink()
    out = tmp_path / "out"
    code, lines, _ = _trainer("--data", str(data), "--output", str(out), *TRAIN)
    assert code == 0, "\n".join(lines[-20:])
    report = [
        json.loads(x) for x in (out / "quarantine" / "worker-0.jsonl").read_text().splitlines()
    ]
    assert report and all(r["reason"] == "not_found" and gone in r["uri"] for r in report)
    code, lines, _ = _trainer(
        "--data", str(data), "--output", str(tmp_path / "strict"), "--on-corrupt", "fail", *TRAIN
    )
    line = _one_error_line(lines)
    assert code == 2 and gone in line, line
    row(
        area=PACKED,
        case="local shard missing",
        injected=f"{gone} deleted from a local packed dataset",
        observed=f"exit 0, its {len(report)} samples quarantined as not_found (as on gs://); "
        f"with --on-corrupt fail: exit 2: {_short(line, tmp_path)}",
    )


def test_index_flag_on_packed_data_is_refused(row, packed, tmp_path):
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", str(tmp_path / "out"), "--index", str(tmp_path / "i.csv")
    )
    line = _one_error_line(lines)
    assert code == 2 and "--index" in line and "packed" in line, line
    row(
        area=PACKED,
        case="--index on packed data",
        injected="--index i.csv with a packed --data",
        observed=f"exit 2: {_short(line, tmp_path)}",
    )


def test_classes_flag_on_packed_data_is_honoured(row, packed, tmp_path):
    names = json.loads((packed / "index.json").read_text())["class_names"]
    out = tmp_path / "out"
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", str(out), "--classes", ",".join(names[::-1]), *TRAIN
    )
    assert code == 0, "\n".join(lines[-20:])
    assert (out / "labels.txt").read_text().split() == names[::-1]
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", str(tmp_path / "o2"), "--classes", "cat,dog", *TRAIN
    )
    line = _one_error_line(lines)
    assert code == 2 and "cat, dog" in line, line
    row(
        area=PACKED,
        case="--classes on packed data",
        injected=f"--classes {','.join(names[::-1])} (reversed); then --classes cat,dog",
        observed=f"exit 0, labels.txt in the given order; then exit 2: {_short(line, tmp_path)}",
    )


# --- Environment failures ---------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) for a real full or read-only file system")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs -o {options} failed here (a container without SYS_ADMIN?)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("target,kib", [("--output", 64), ("--checkpoint-dir", 16)])
def test_full_disk_names_the_path(row, packed, tmp_path, target, kib):
    with _tmpfs(tmp_path / "small", f"size={kib}k") as small:
        place = small / "run"
        extra = () if target == "--output" else ("--output", str(tmp_path / "out"))
        code, lines, _ = _trainer("--data", str(packed), target, str(place), *extra, *TRAIN)
    line = _one_error_line(lines)
    assert code == 2 and str(place) in line and "ENOSPC" in line, line
    row(
        area=ENVIRONMENT,
        case=f"disk full under {target}",
        injected=f"{target} on a {kib} KiB tmpfs",
        observed=f"exit 2: {_short(line, tmp_path)}",
    )


REMOUNT = """
import subprocess, sys
from trainer.cli import main
class Hooks:
    overflow_step = -1
    def reached(self, point):
        if point == "epoch_end":
            subprocess.run(["mount", "-o", "remount,ro", sys.argv[1]], check=True)
sys.exit(main(sys.argv[2:], hooks=Hooks()))
"""


def test_read_only_disk_mid_run_names_the_path(row, packed, tmp_path):
    with _tmpfs(tmp_path / "disk", "size=64m") as disk:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                REMOUNT,
                str(disk),
                "train",
                "--data",
                str(packed),
                # The disk holds the checkpoints: the held lease file in --output would keep a
                # remount from turning it read-only ("mount point is busy").
                "--output",
                str(tmp_path / "run"),
                "--checkpoint-dir",
                str(disk / "ck"),
                *TRAIN,
            ],
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            capture_output=True,
            text=True,
            timeout=120,
        )
    line = _one_error_line(done.stderr.splitlines())
    assert done.returncode == 2 and str(disk / "ck") in line and "EROFS" in line, line
    row(
        area=ENVIRONMENT,
        case="disk turns read-only mid-run",
        injected="the --checkpoint-dir tmpfs remounted read-only after epoch 1",
        observed=f"exit 2: {_short(line, tmp_path)}",
    )


def test_read_only_output_at_start(row, packed, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        code, lines, _ = _trainer("--data", str(packed), "--output", str(ro / "run"), *TRAIN)
    line = _one_error_line(lines)
    assert code == 2 and "--output" in line and "Read-only" in line, line
    row(
        area=ENVIRONMENT,
        case="read-only --output",
        injected="--output on a read-only tmpfs",
        observed=f"exit 2: {_short(line, tmp_path)}",
    )


def test_imagenet_weights_unreachable(row, packed, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", str(tmp_path / "out"), *TRAIN[:6],
        "--model", "mobilenet_v3_small", "--weights", "imagenet",
        env={"HTTPS_PROXY": closed, "https_proxy": closed, "KERAS_HOME": str(tmp_path / "k")},
    )  # fmt: skip
    line = _one_error_line(lines)
    assert code == 5 and "--weights PATH" in line and "https://" in line, line
    row(
        area=ENVIRONMENT,
        case="--weights imagenet unreachable",
        injected="--weights imagenet, no route to storage.googleapis.com",
        observed=f"exit 5: {_short(line, tmp_path)}",
    )


def _write_bombs(tmp: Path) -> dict[str, tuple[Path, str]]:
    deep_json = tmp / "deep.json"
    deep_json.write_text('{"epochs": ' + "[" * 10000 + "]" * 10000 + "}")
    deep_yaml = tmp / "deep.yaml"
    deep_yaml.write_text("epochs: " + "[" * 10000 + "]" * 10000 + "\n")
    bomb = tmp / "bomb.yaml"
    lines = ["classes:", "  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\n")
    return {
        "JSON nested 10000 deep": (deep_json, "nested over"),
        "YAML nested 10000 deep": (deep_yaml, "nested over"),
        "YAML alias bomb (9^10 values)": (bomb, "aliases are expanded"),
    }


def test_config_file_bounds(row, tmp_path, packed):
    for case, (path, says) in _write_bombs(tmp_path).items():
        code, lines, seconds = _trainer(
            "--data", str(packed), "--output", str(tmp_path / "out"), "--config", str(path),
            timeout=30,
        )  # fmt: skip
        line = _one_error_line(lines)
        assert code == 2 and str(path) in line and says in line, line
        assert seconds < 10, seconds  # interpreter start included; the parse itself is < 1 s
        row(
            area=ENVIRONMENT,
            case=f"config file: {case}",
            injected=f"--config {path.name}: {case}",
            observed=f"exit 2 in {seconds:.1f} s: {_short(line, tmp_path)}",
        )


@pytest.mark.parametrize("flag", ["--checkpoint-dir", "--tensorboard-dir"])
def test_gcs_dirs_probed_at_start(row, packed, tmp_path, gcs_emulator, gcs_admin, flag):
    bucket = f"out-{uuid.uuid4().hex[:12]}"
    gcs_admin.create_bucket(bucket)
    missing = f"gs://missing-{uuid.uuid4().hex[:12]}/dir"
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", f"gs://{bucket}/run", flag, missing, *TRAIN,
        env={EMULATOR_ENV: gcs_emulator},
    )  # fmt: skip
    line = _one_error_line(lines)
    assert code == 2 and flag in line and missing in line, line
    assert not any("devices:" in x for x in lines)  # before TensorFlow, not after an epoch
    row(
        area=ENVIRONMENT,
        case=f"gs:// {flag} bucket missing",
        injected=f"{flag} {missing.split('/')[2]}/... (no such bucket), --output writable",
        observed=f"exit 2 before training: {_short(line, tmp_path)}",
    )


def test_gate_without_validation_objects(row, packed, tmp_path):
    code, lines, _ = _trainer(
        "--data", str(packed), "--output", str(tmp_path / "out"), *TRAIN[:-2],
        "--val-split", "0.01", "--min-val-accuracy", "0.5",
    )  # fmt: skip
    line = _one_error_line(lines)
    assert code == 2 and "--min-val-accuracy" in line and "--val-split" in line, line
    assert not any("devices:" in x for x in lines)
    row(
        area=ENVIRONMENT,
        case="quality gate, empty validation split",
        injected="--min-val-accuracy 0.5 --val-split 0.01 on 24 samples (0 for validation)",
        observed=f"exit 2 before training: {_short(line, tmp_path)}",
    )
