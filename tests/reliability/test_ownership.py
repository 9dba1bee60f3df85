"""Data safety: the trainer and `trainer pack` replace or remove only files they wrote.

Each case puts a user's files where a run writes (the TensorBoard folder, --output, the cache
folder, a pack's --output) and runs the real CLI as a subprocess: the user's files must be there
afterwards, byte for byte, and a folder that could only be used by overwriting one is refused
with exit 2 and one line naming it. Output files must get the process umask's modes.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_ownership.py
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.pack.writer import PackConfig, pack

AREA = "Data safety: ownership"
ROOT = Path(__file__).resolve().parents[2]
TRAIN = ("--epochs", "2", "--image-size", "32", "--model", "linear", "--batch-size", "8")


def _run(*args: str, umask: int = 0o022) -> tuple[int, str]:
    """`python -m trainer ARGS` under `umask`: (exit code, the last line of stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts" / "launcher")]),
        },
        preexec_fn=lambda: os.umask(umask),
    )
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, (lines[-1] if lines else "")


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("owndata") / "data"
    write_learnable_dataset(str(root), classes=2, per_class=8, min_size=32, max_size=40, seed=1)
    return root


@pytest.fixture(scope="module")
def shared_run(data, tmp_path_factory):
    """One run under umask 022 with a user's files in its TensorBoard folder and cache folder."""
    tmp = tmp_path_factory.mktemp("ownrun")
    (tmp / "tb").mkdir()
    (tmp / "tb" / "notes.txt").write_text("my notes")
    home = tmp / "home"
    (home / "docs" / ".tmpX").mkdir(parents=True)  # a folder with a temporary-looking name
    (home / "docs" / ".tmpnotes").write_text("precious")
    (home / "big.bin").write_bytes(b"u" * (2 << 20))
    code, last = _run(
        "train", "--data", str(data), "--output", str(tmp / "out"),
        "--tensorboard-dir", str(tmp / "tb"), "--cache-dir", str(home), "--cache-size-mb", "1",
        *TRAIN,
    )  # fmt: skip
    return tmp, code, last


def test_tensorboard_dir_with_a_users_file_keeps_it(shared_run, row):
    tmp, code, last = shared_run
    assert code == 0, last
    assert (tmp / "tb" / "notes.txt").read_text() == "my notes"
    events = [p.name for p in (tmp / "tb").iterdir() if p.name.startswith("events.out.tfevents")]
    assert len(events) == 1
    row(
        area=AREA,
        case="TensorBoard folder holding a user's file",
        injected="--tensorboard-dir DIR where DIR already holds notes.txt",
        observed="exit 0; notes.txt kept byte for byte beside the run's one event file "
        "(events.out.tfevents.*); before: the folder was swapped after each epoch, notes.txt "
        "deleted",
    )


def test_tensorboard_dir_equal_to_output(data, tmp_path, row):
    out = tmp_path / "out"
    code, last = _run(
        "train", "--data", str(data), "--output", str(out), "--tensorboard-dir", str(out), *TRAIN
    )
    assert code == 0, last
    names = {p.name for p in out.iterdir()}
    assert {"model.keras", "metrics.json", "_SUCCESS", "checkpoints", "saved_model"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert list((out / "checkpoints").glob("ckpt-*/COMMITTED"))
    row(
        area=AREA,
        case="TensorBoard folder equal to --output",
        injected="--tensorboard-dir OUT --output OUT",
        observed="exit 0; the event file sits beside model.keras, checkpoints/ and _SUCCESS, "
        "all kept (before: the checkpoints were swapped away after epoch 1, exit 2)",
    )


def test_byte_cache_keeps_foreign_tmp_files_and_folders(shared_run, row):
    tmp, code, last = shared_run
    home = tmp / "home"
    assert code == 0, last
    assert (home / "docs" / ".tmpnotes").read_text() == "precious"
    assert (home / "docs" / ".tmpX").is_dir()
    assert (home / "big.bin").stat().st_size == 2 << 20
    own = home / "streamtrain-bytes"
    assert (own / ".streamtrain-cache").is_file()
    cached = [p for p in own.rglob("*") if p.is_file() and p.name != ".streamtrain-cache"]
    assert cached, "the images were cached, in the cache's own subfolder"
    row(
        area=AREA,
        case="image cache beside a user's files",
        injected="--cache-dir HOME --cache-size-mb 1, HOME holding docs/.tmpnotes, a folder "
        "docs/.tmpX and a 2 MB big.bin",
        observed=f"exit 0; all three kept; {len(cached)} images cached in "
        "HOME/streamtrain-bytes/ (before: exit 1, IsADirectoryError on docs/.tmpX, "
        ".tmpnotes deleted)",
    )


def test_output_files_get_the_umask_modes(shared_run, row):
    tmp, code, last = shared_run
    out = tmp / "out"
    assert code == 0, last
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {"model.keras", "metrics.json", "labels.txt", "_SUCCESS"} <= {p.name for p in files}
    assert list(out.glob("checkpoints/ckpt-*/weights.npz"))
    assert list(out.glob("saved_model/*/saved_model.pb"))
    modes = {str(p.relative_to(out)): _mode(p) for p in files}
    assert set(modes.values()) == {"644"}, modes
    assert {_mode(p) for p in folders} == {"755"}
    assert {_mode(p) for p in (tmp / "tb").iterdir()} == {"644"}
    row(
        area=AREA,
        case="file modes of the outputs",
        injected="a run under umask 022",
        observed=f"all {len(files)} files under --output (model.keras, metrics.json, "
        "checkpoints, saved_model) and the event file are 0644, folders 0755 "
        "(before: 0600, unreadable by a serving process of another user)",
    )


def test_shard_cache_eviction_keeps_a_users_file(gcs_bucket, gcs_upload_tree, data, tmp_path, row):
    gcs_upload_tree(str(data), f"gs://{gcs_bucket}/raw")
    packed = f"gs://{gcs_bucket}/packed"
    # Shards of about 16 KB: a few downloads.
    pack(PackConfig(source=f"gs://{gcs_bucket}/raw", output=packed, shard_size_mb=0.016), Storage())
    home = tmp_path / "home"
    home.mkdir()
    (home / "big.bin").write_bytes(b"u" * (2 << 20))
    code, last = _run(
        "train", "--data", packed, "--output", str(tmp_path / "out"),
        "--cache-dir", str(home), "--cache-size-mb", "1", *TRAIN[2:], "--epochs", "1",
    )  # fmt: skip
    assert code == 0, last
    assert (home / "big.bin").stat().st_size == 2 << 20
    shards = list((home / "streamtrain-shards").glob("*-shard-*.tar"))
    assert shards
    row(
        area=AREA,
        case="shard cache beside a user's file",
        injected="packed gs:// --data with --cache-dir HOME --cache-size-mb 1, HOME holding a "
        "2 MB big.bin",
        observed=f"exit 0; big.bin kept; {len(shards)} shards in HOME/streamtrain-shards/ "
        "(before: big.bin counted as cache and evicted)",
    )


def test_unmarked_cache_folder_with_files_is_refused(data, tmp_path, row):
    own = tmp_path / "home" / "streamtrain-bytes"
    own.mkdir(parents=True)
    (own / "mine.txt").write_text("mine")
    code, last = _run(
        "train", "--data", str(data), "--output", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "home"), "--cache-size-mb", "1", *TRAIN,
    )  # fmt: skip
    assert code == 2, last
    assert last.startswith("error: --cache-dir") and str(own) in last
    assert (own / "mine.txt").read_text() == "mine"
    row(
        area=AREA,
        case="a folder named like the cache's, not the trainer's",
        injected="--cache-dir HOME where HOME/streamtrain-bytes/ holds mine.txt and no marker",
        observed=f"exit 2; {last.replace(str(tmp_path), 'TMP')}",
    )


def test_pack_into_a_folder_with_foreign_files(data, tmp_path, row):
    out = tmp_path / "packed"
    out.mkdir()
    (out / "index.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("mine")
    code, last = _run("pack", "--source", str(data), "--output", str(out))
    assert code == 2, last
    assert last.startswith("error: --output") and str(out / "index.json") in last
    assert (out / "index.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "notes.txt"]
    (out / "index.json").unlink()
    code_ok, last_ok = _run("pack", "--source", str(data), "--output", str(out))
    assert code_ok == 0, last_ok
    assert (out / "notes.txt").read_text() == "mine" and (out / "_SUCCESS").exists()
    row(
        area=AREA,
        case="trainer pack into a folder holding a user's files",
        injected="trainer pack --output DIR, DIR holding the user's index.json and notes.txt",
        observed=f"exit 2; {last.replace(str(tmp_path), 'TMP')}; index.json untouched. "
        "Without index.json: exit 0, notes.txt kept (before: exit 0, index.json overwritten)",
    )
