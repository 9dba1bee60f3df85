"""Packed-index validation, --classes on packed data, bounded config files and the one-line
form of file-system errors: the pieces behind tests/reliability/test_environment.py, in-process."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import time
import urllib.error

import numpy as np
import pytest

from trainer.cli import _unexpected
from trainer.config import build_config
from trainer.data.localfs import local_call
from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import (
    ConfigError,
    DataError,
    ExitCode,
    StorageNotFoundError,
    WriteError,
    write_error,
)
from trainer.model.trainable import _download_failed
from trainer.pack.format import open_packed
from trainer.pack.sequence import PackedSplit
from trainer.pack.shards import ShardCache
from trainer.pack.writer import PackConfig, pack


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    write_learnable_dataset(str(tmp / "src"), classes=3, per_class=4, seed=1)
    pack(PackConfig(source=str(tmp / "src"), output=str(tmp / "p"), shard_size_mb=0.01), Storage())
    return tmp / "p"


def _edited(packed, tmp_path, edit, **dump):
    folder = tmp_path / "copy"
    shutil.copytree(packed, folder)
    doc = json.loads((folder / "index.json").read_text())
    edit(doc)
    (folder / "index.json").write_text(json.dumps(doc, **dump))
    return str(folder)


def _set(path: str, value):
    def edit(doc):
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return edit


@pytest.mark.parametrize(
    "path,value,says",
    [
        ("samples.label.0", 3, "samples.label[0] is 3, outside 0..2"),
        ("samples.label.0", -1, "samples.label[0] is -1"),
        ("samples.label.0", 1.5, "samples.label must be a list of integers"),
        ("samples.label.0", 2**40, "samples.label[0] is 1099511627776, out of range"),
        ("samples.shard.0", 99, "samples.shard[0] is 99"),
        ("samples.offset.0", -1, "samples.offset[0] is -1, negative"),
        ("samples.size.0", -1, "samples.size[0] is -1, negative"),
        ("samples.size.0", 10**9, "lies beyond the"),
        ("samples.crc32c.0", -1, "samples.crc32c[0] is -1, out of range"),
        ("class_names", ["a", "b", "a"], "class_names holds 'a' more than once"),
        ("class_names", ["a", "", "c"], "class_names must be non-empty strings"),
        ("shards.0.name", "../x.tar", "'../x.tar' is not a file name inside"),
        ("shards.0.name", "/abs/x.tar", "'/abs/x.tar' is not a file name inside"),
        ("shards.0.name", "sub/x.tar", "'sub/x.tar' is not a file name inside"),
        ("shards.0.bytes", -3, "shards[0].bytes is negative"),
        ("samples.key.0", 5, "samples.key must be a list of strings"),
        ("samples", [], "unreadable packed index"),
    ],
)
def test_a_bad_index_is_refused_naming_the_field(packed, tmp_path, path, value, says):
    with pytest.raises(DataError, match="re-run trainer pack") as caught:
        open_packed(_edited(packed, tmp_path, _set(path, value)), Storage())
    assert says in str(caught.value) and "index.json" in str(caught.value)


def test_overlapping_samples_are_refused(packed, tmp_path):
    def overlap(doc):
        shards = doc["samples"]["shard"]
        i, j = next((i, j) for i in range(len(shards)) for j in range(i) if shards[i] == shards[j])
        doc["samples"]["offset"][i] = doc["samples"]["offset"][j] + 1

    with pytest.raises(DataError, match="overlap in shard-"):
        open_packed(_edited(packed, tmp_path, overlap), Storage())


@pytest.mark.parametrize("dump", [{"indent": 2}, {"indent": 1, "sort_keys": True}])
def test_a_pretty_printed_or_sorted_index_is_packed(packed, tmp_path, dump):
    index = open_packed(_edited(packed, tmp_path, lambda doc: None, **dump), Storage())
    assert index is not None and len(index) == 12


def test_another_format_version_is_refused_not_listed(packed, tmp_path):
    folder = _edited(packed, tmp_path, _set("format", "streamtrain-packed/9"))
    with pytest.raises(DataError, match="not a streamtrain-packed/1 index"):
        open_packed(folder, Storage())


def test_select_classes_keeps_and_relabels(packed):
    index = open_packed(str(packed), Storage())
    a, _, c = index.class_names
    chosen = index.select_classes((c, a))
    assert chosen.class_names == (c, a) and len(chosen) == 8
    before = dict(zip(index.keys, (index.class_names[i] for i in index.labels), strict=True))
    after = dict(zip(chosen.keys, (chosen.class_names[i] for i in chosen.labels), strict=True))
    assert after == {k: v for k, v in before.items() if v in (a, c)}
    assert index.select_classes(index.class_names) is index
    with pytest.raises(ConfigError, match=r"--classes .*: zebra not among"):
        index.select_classes((a, "zebra"))


def test_a_missing_local_shard_reads_as_not_found(packed, tmp_path):
    folder = _edited(packed, tmp_path, lambda doc: None)
    index = open_packed(folder, Storage())
    (tmp_path / "copy" / index.shards[0]).unlink()
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=1 << 20, storage=Storage())
    split = PackedSplit.of(index, np.arange(len(index)), cache)
    first = int(np.flatnonzero(index.sample_shard == 0)[0])
    with pytest.raises(StorageNotFoundError, match="no such file or directory"):
        split.read_sample(first)


# --- config files -----------------------------------------------------------------------------


def _config(tmp_path, name: str, text: str) -> list[str]:
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "b").mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
    return ["--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--config", str(tmp_path / name)]  # fmt: skip


def _bomb(key: str) -> str:
    lines = [f"{key}:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "name,text,says",
    [
        ("deep.json", '{"epochs": ' + "[" * 5000 + "]" * 5000 + "}", "nested over 32 levels"),
        ("deep.json", '{"epochs": ' + "[" * 40 + "]" * 40 + "}", "nested over 32 levels"),
        ("deep.yaml", "epochs: " + "[" * 5000 + "]" * 5000, "nested over 32 levels"),
        ("deep.yaml", "".join("  " * i + "a:\n" for i in range(200)), "nested over 32 levels"),
        ("bomb.yaml", _bomb("classes"), "over 100000 values once its aliases are expanded"),
        ("big.yaml", "epochs: 1\n" + "#" * (1 << 20), "is over 1024 KiB"),
    ],
)
def test_config_files_are_bounded(tmp_path, name, text, says):
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        build_config(_config(tmp_path, name, text), env={})
    assert time.monotonic() - started < 1.0
    assert says in str(caught.value) and str(tmp_path / name) in str(caught.value)


def test_a_config_with_a_few_aliases_still_loads(tmp_path):
    text = "image_size: &s [32, 32]\nepochs: 2\n"
    assert build_config(_config(tmp_path, "ok.yaml", text), env={}).image_size == (32, 32)


# --- file-system errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,says",
    [(errno.EROFS, "read-only"), (errno.ENOSPC, "no space"), (errno.EDQUOT, "disk quota")],
)
def test_write_errors_name_the_path(code, says):
    def fail():
        raise OSError(code, "boom")  # as f.write() raises it: no file name

    with pytest.raises(WriteError, match=f"^/o/model.keras: {says}.*{errno.errorcode[code]}"):
        local_call("/o/model.keras", "write", fail)


def test_other_os_errors_stay_bugs():
    def fail():
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        local_call("/o/model.keras", "write", fail)
    assert write_error(OSError(errno.ENOSPC, "full")) is None  # no file named: a bug's traceback
    assert write_error(OSError(errno.EINVAL, "bad", "/x")) is None


def test_copytree_errors_are_read_for_their_errno():
    error = shutil.Error([("/tmp/a", "/o/tb/a", "[Errno 28] No space left on device: '/tmp/a'")])
    assert str(write_error(error, "/o/tb")).startswith(
        "/o/tb: no space left on the device (ENOSPC)"
    )
    assert str(write_error(error)).startswith("/o/tb/a: no space")  # no path given: the copy's


def test_cli_reports_a_named_disk_error_in_one_line(capsys, caplog):
    code = _unexpected(OSError(errno.EROFS, "Read-only file system", "/o/ckpt/x"), "text")
    assert code == ExitCode.BAD_INPUT
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "error: /o/ckpt/x: read-only file system (EROFS); write to a writable local directory "
            "or gs://"
        )
    )
    with caplog.at_level(logging.ERROR):
        assert _unexpected(OSError(errno.EIO, "I/O error", "/o/x"), "text") == ExitCode.CRASH
    assert "this is a bug" in caplog.text


def test_keras_download_failure_is_recognised():
    # keras.utils.get_file re-raises a URLError as a plain Exception inside its except block.
    try:
        try:
            raise urllib.error.URLError("Name or service not known")
        except urllib.error.URLError:
            raise Exception("URL fetch failure on https://x: None -- no")  # noqa: B904
    except Exception as e:
        assert _download_failed(e)
    assert not _download_failed(ValueError("bad weights"))
    assert not _download_failed(Exception("URL fetch failure, but no network error under it"))
