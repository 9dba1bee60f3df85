"""Labels are never silently wrong: the manifest header, the one label rule for CSV, JSONL and
class folders, URIs normalised before the duplicate check, symlinks never followed."""

from __future__ import annotations

import json
import logging
import os

import pytest

from trainer.config.labels import json_label, label_problem
from trainer.data.index import discover
from trainer.data.localwalk import list_files
from trainer.data.storage import Storage
from trainer.errors import DataError


@pytest.fixture
def images(tmp_path):
    """tmp/img/{a,b}{0,1}.jpg: the manifests below refer to these."""
    (tmp_path / "img").mkdir()
    for name in ("a0", "a1", "b0", "b1"):
        (tmp_path / "img" / f"{name}.jpg").write_bytes(b"\xff\xd8\xff" + name.encode())
    return tmp_path


def _discover(path):
    return discover(str(path), storage=Storage())


@pytest.mark.parametrize("header", ["uri,label", "URI, Label", " uri ,LABEL "])
def test_the_uri_label_header_is_recognised_in_any_case_and_spacing(images, header):
    (images / "m.csv").write_text(f"\n{header}\nimg/a0.jpg,a\nimg/b0.jpg,b\n")
    index = _discover(images / "m.csv")
    assert index.class_names == ("a", "b") and len(index) == 2


def test_a_headerless_manifest_starting_with_an_image_row_is_read(images):
    (images / "m.csv").write_text("img/a0.jpg,a\nimg/b0.jpg,b\n")
    assert _discover(images / "m.csv").class_names == ("a", "b")


@pytest.mark.parametrize("header", ["path,class", "image,label", "uri,label,split"])
def test_another_header_is_refused_not_read_as_a_class(images, header):
    (images / "m.csv").write_text(f"{header}\nimg/a0.jpg,a\nimg/b0.jpg,b\n")
    with pytest.raises(DataError, match=rf"m.csv:1: the first line '{header}' is neither"):
        _discover(images / "m.csv")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("cat", "cat"), (" cat ", "cat"), (1, "1"), (-3, "-3")],
        *[(1.0, None), (True, None), (None, None), ([1], None), ({"a": 1}, None)],
    ],
)
def test_json_label_values(value, expected):
    assert json_label(value) == expected


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("", "is empty"),
        ("a\nb", "U+000A"),
        ("a\tb", "U+0009"),
        ("a\u2028b", "U+2028"),
        ("cat\u200b", "U+200B"),
    ],
)
def test_label_problems(label, problem):
    assert problem in label_problem(label)
    assert label_problem("chat noir/été 🐈") is None


def test_jsonl_integer_labels_are_their_decimal_string(images):
    rows = [("img/a0.jpg", 1), ("img/a1.jpg", "1"), ("img/b0.jpg", 2), ("img/b1.jpg", " 2")]
    (images / "m.jsonl").write_text(
        "".join(json.dumps({"uri": u, "label": v}) + "\n" for u, v in rows)
    )
    index = _discover(images / "m.jsonl")
    assert index.class_names == ("1", "2") and index.labels == (0, 0, 1, 1)


@pytest.mark.parametrize(
    ("value", "shown"), [(1.0, "1.0"), (None, "null"), (False, "false"), (["a"], r'\["a"\]')]
)
def test_jsonl_labels_that_are_not_class_names_are_refused(images, value, shown):
    lines = [{"uri": "img/a0.jpg", "label": 1}, {"uri": "img/b0.jpg", "label": value}]
    (images / "m.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(DataError, match=rf"m.jsonl:2: label {shown} is not a class name"):
        _discover(images / "m.jsonl")


def test_control_characters_in_a_label_are_refused_csv_and_jsonl(images):
    (images / "m.csv").write_text('uri,label\nimg/a0.jpg,a\nimg/b0.jpg,"b\nc"\n')
    with pytest.raises(DataError, match=r"m.csv:3: label \"b\\nc\" contains the control"):
        _discover(images / "m.csv")
    (images / "m.jsonl").write_text('{"uri": "img/a0.jpg", "label": "a\\u2028b"}\n')
    with pytest.raises(DataError, match=r"m.jsonl:1: label \"a\\u2028b\" contains the control"):
        _discover(images / "m.jsonl")
    (images / "e.jsonl").write_text('{"uri": "img/a0.jpg", "label": "  "}\n')
    with pytest.raises(DataError, match=r"e.jsonl:1: label \"  \" is empty"):
        _discover(images / "e.jsonl")


def test_a_class_folder_name_follows_the_label_rule(tmp_path):
    for name in ("ok", "bad\tname"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"class folder \"bad\\tname\" contains the control"):
        _discover(tmp_path)


@pytest.mark.parametrize("alias", ["img/../img/a0.jpg", "img//a0.jpg", "./img/a0.jpg"])
def test_aliases_of_one_image_are_duplicates(images, alias):
    (images / "m.csv").write_text(f"uri,label\nimg/a0.jpg,a\nimg/b0.jpg,b\n{alias},b\n")
    with pytest.raises(DataError, match=rf"m.csv:4: duplicate uri {alias} \(first on line 2"):
        _discover(images / "m.csv")
    (images / "m.csv").write_text(f"uri,label\n{images}/img/a0.jpg,a\nimg/b0.jpg,b\n{alias},b\n")
    with pytest.raises(DataError, match=r"m.csv:4: duplicate uri"):
        _discover(images / "m.csv")


def test_gcs_manifest_uris_are_normalised_and_kept_in_their_bucket(gcs_bucket):
    storage = Storage()
    manifest = f"gs://{gcs_bucket}/lists/m.csv"
    storage.write(manifest, b"uri,label\n../img/a0.jpg,a\ngs://other//b/./b0.jpg,b\n")
    index = discover(manifest, storage=storage)
    assert index.uris == ("gs://other/b/b0.jpg", f"gs://{gcs_bucket}/img/a0.jpg")
    storage.write(manifest, b"uri,label\n../img/a0.jpg,a\n../../b0.jpg,b\n")
    with pytest.raises(DataError, match=r"m.csv:3: uri ../../b0.jpg does not name an object"):
        discover(manifest, storage=storage)
    storage.write(
        manifest, f"uri,label\ngs://{gcs_bucket}/img/a0.jpg,a\n../img/a0.jpg,b\n".encode()
    )
    with pytest.raises(DataError, match=r"m.csv:3: duplicate uri ../img/a0.jpg \(first on line 2"):
        discover(manifest, storage=storage)


@pytest.fixture
def linked(tmp_path):
    """root/{a,b}/real.jpg and symlinks of every kind; outside/ holds files not in the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for d in (root / "a", root / "b", outside / "c"):
        d.mkdir(parents=True)
    (root / "a" / "real.jpg").write_bytes(b"a")
    (root / "b" / "real.jpg").write_bytes(b"b")
    (outside / "c" / "secret.jpg").write_bytes(b"c")
    os.symlink("../../outside/c", root / "a" / "out_dir")
    os.symlink(outside / "c" / "secret.jpg", root / "b" / "out.jpg")
    os.symlink(outside / "c", root / "c")  # a class folder outside the root
    os.symlink("..", root / "b" / "loop")
    os.symlink("../a/real.jpg", root / "b" / "alias.jpg")
    os.symlink("missing.jpg", root / "b" / "broken.jpg")
    return root


def test_symlinks_are_never_followed_and_counted_by_kind(linked, caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.data.localwalk"):
        files, skipped = list_files(str(linked), wanted=lambda n: n.endswith(".jpg"))
    assert files == [str(linked / "a" / "real.jpg"), str(linked / "b" / "real.jpg")]
    assert skipped.counts == {
        "leading outside it": 3,
        "looping back to a folder above them": 1,
        "naming files also listed under their real path": 1,
        "broken": 1,
    }
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{linked}: skipped 6 symlinks, not followed: 1 broken (e.g. b/")
    assert "3 leading outside it (e.g. " in message and "b/loop -> ..)" in message


def test_a_class_folder_dataset_ignores_symlinked_folders_and_files(linked, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        index = _discover(linked)
    assert index.class_names == ("a", "b")  # not the symlinked folder c
    assert [os.path.relpath(u, linked) for u in index.uris] == ["a/real.jpg", "b/real.jpg"]
    assert any("skipped 6 symlinks" in r.getMessage() for r in caplog.records)
    # The root itself may be a symlink: its files are listed under the path given.
    os.symlink(linked, tmp_path / "via")
    assert _discover(tmp_path / "via").uris[0] == str(tmp_path / "via" / "a" / "real.jpg")
