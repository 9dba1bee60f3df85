"""`trainer pack` never mixes two versions of its source: parts, resumes and re-runs onto a
finished pack compare the source's class names and listing fingerprint with those recorded."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import ConfigError, DataError
from trainer.pack.format import open_packed
from trainer.pack.writer import PackConfig, merge_only, pack


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    write_learnable_dataset(str(root), classes=2, per_class=6, min_size=24, max_size=32, seed=2)
    return root


def _add_class(root):
    (root / "aaa").mkdir()
    for i, image in enumerate(sorted((root / "circle").iterdir())[:3]):
        shutil.copy(image, root / "aaa" / f"a{i}{image.suffix}")


def _labels_match_folders(out) -> bool:
    packed = open_packed(str(out), Storage())
    return all(
        src.rsplit("/", 2)[-2] == packed.class_names[label]
        for src, label in zip(packed.sources, packed.labels, strict=True)
    )


def test_a_part_from_another_version_of_the_source_is_refused(source, tmp_path):
    cfg = PackConfig(source=str(source), output=str(tmp_path / "out"), parts=2)
    pack(cfg, Storage())
    _add_class(source)
    part1 = dataclasses.replace(cfg, part=1)
    with pytest.raises(DataError) as caught:
        pack(part1, Storage())
    assert str(caught.value) == (
        f"--output {cfg.output}: part 0 was packed from another version of --source "
        f"{source} (classes then: circle, square; now: aaa, circle, square); mixing them would "
        f"mislabel samples: pack into a new --output, or delete {cfg.output} and pack again"
    )
    shutil.rmtree(source / "aaa")
    assert pack(part1, Storage()).merged
    assert _labels_match_folders(tmp_path / "out")
    settings = open_packed(cfg.output, Storage()).settings
    assert settings["source_version"]["class_names"] == ["circle", "square"]
    assert settings["source_version"]["objects"] == 12


def test_a_resume_onto_shards_of_another_version_is_refused(source, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(source), output=str(out), shard_size_mb=1e-6)
    pack(cfg, Storage())
    for name in ("index.json", "_SUCCESS", "parts/00000.done"):
        (out / name).unlink()  # killed before its part finished
    (source / "square" / "square_0000.jpg").rename(source / "circle" / "moved.jpg")
    with pytest.raises(DataError, match=r"shard-00000-00000.tar was packed from another version"):
        pack(cfg, Storage())
    (source / "circle" / "moved.jpg").rename(source / "square" / "square_0000.jpg")
    assert pack(cfg, Storage()).merged  # the same source resumes
    assert _labels_match_folders(out)


def test_a_rerun_onto_a_finished_pack(source, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(source), output=str(out))
    pack(cfg, Storage())
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    summary = pack(cfg, Storage())  # the same flags and source: complete, nothing rewritten
    assert (summary.shards_written, summary.merged) == (0, False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before
    other = tmp_path / "other"
    shutil.copytree(source, other)
    with pytest.raises(ConfigError, match=r"finished pack made with other settings \(source "):
        pack(dataclasses.replace(cfg, source=str(other)), Storage())
    with pytest.raises(ConfigError, match=r"other settings \(quality 90 → 50\); pack into a new"):
        pack(dataclasses.replace(cfg, quality=50), Storage())
    _add_class(source)
    with pytest.raises(DataError, match=r"is a finished pack of another version of --source"):
        pack(cfg, Storage())
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before


def test_the_merge_refuses_parts_of_different_versions(source, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(source), output=str(out), parts=2, merge=False)
    for part in (0, 1):
        pack(dataclasses.replace(cfg, part=part), Storage())
    # Two pods that listed the source on either side of a change: the parts disagree.
    done = json.loads((out / "parts" / "00001.done").read_text())
    done["source_version"].update(fingerprint="0" * 16, objects=13)
    (out / "parts" / "00001.done").write_text(json.dumps(done))
    with pytest.raises(DataError, match=r"parts 0 and 1 were packed from different versions"):
        merge_only(cfg, Storage())
    assert not (out / "_SUCCESS").exists()


def test_class_names_with_control_characters_are_refused():
    from trainer.config.validate import class_names

    with pytest.raises(ConfigError, match=r'--classes: class name "b\\tc" contains the control'):
        class_names("a,b\tc", "--classes")
