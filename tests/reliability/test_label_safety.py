"""Labels are never silently wrong, symlinks never followed: `python -m trainer train|pack`
as a subprocess on manifests, class folders and packs made to mislabel, each row with its exit
code and the last line on stderr.

Manifest cases must exit 2 with one `error: ...` line naming the manifest and line before any
training; pack cases must refuse (exit 2) whatever would mix two versions of the source, and a
plain re-run onto a finished pack must exit 0 without rewriting a file; symlinks out of the root
or around a loop are skipped and counted in one warning line.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_label_safety.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.dev.synthetic import write_learnable_dataset

ROOT = Path(__file__).resolve().parents[2]
LABELS = "Data safety: labels"
SYMLINKS = "Data safety: symlinks"


def _run(*args: str, cwd: Path) -> tuple[int, str, str]:
    """(exit code, last stderr line, all of stderr) of `python -m trainer ARGS`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "AIP_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, (lines[-1] if lines else ""), result.stderr


def _message(line: str) -> str:
    """A log line without its timestamp."""
    parts = line.split(" ", 2)
    return parts[2] if len(parts) == 3 and parts[0][:4].isdigit() else line


@pytest.fixture
def data(tmp_path):
    """tmp/data/{circle,square}/*: six images per class, and the relative paths of each."""
    write_learnable_dataset(
        str(tmp_path / "data"), classes=2, per_class=6, min_size=24, max_size=32, seed=3
    )
    return {
        c: [f"data/{c}/{p.name}" for p in sorted((tmp_path / "data" / c).iterdir())]
        for c in ("circle", "square")
    }


def _train(manifest: str, cwd: Path) -> tuple[int, str, str]:
    out = str(cwd / "out")
    return _run("train", "--data", manifest, "--output", out, "--epochs", "1", cwd=cwd)


def _csv_rows(data) -> str:
    return "".join(f"{p},{c}\n" for c, paths in data.items() for p in paths)


MANIFESTS = [
    # (case, injected, file name, text builder, the names the error must hold)
    (
        "CSV header path,class",
        "a .csv whose first line is path,class",
        "m.csv",
        lambda d: "path,class\n" + _csv_rows(d),
        ("m.csv:1", "'path,class'", "uri,label"),
    ),
    (
        "CSV header image,label",
        "a .csv whose first line is image,label",
        "m.csv",
        lambda d: "image,label\n" + _csv_rows(d),
        ("m.csv:1", "'image,label'", "uri,label"),
    ),
    (
        "JSONL labels 1 and 1.0",
        "label 1 on the circles, 1.0 on the squares",
        "m.jsonl",
        lambda d: "".join(
            json.dumps({"uri": p, "label": 1 if c == "circle" else 1.0}) + "\n"
            for c, paths in d.items()
            for p in paths
        ),
        ("m.jsonl:7", "label 1.0"),
    ),
    (
        "JSONL label null",
        "label null on the first line",
        "m.jsonl",
        lambda d: "".join(
            json.dumps({"uri": p, "label": None if i == 0 else c}) + "\n"
            for i, (c, p) in enumerate((c, p) for c, paths in d.items() for p in paths)
        ),
        ("m.jsonl:1", "label null"),
    ),
    (
        "quoted newline in a CSV label",
        'label "cir\\ncle" (a quoted newline) on line 2',
        "m.csv",
        lambda d: (
            "uri,label\n"
            + f'{d["circle"][0]},"cir\ncle"\n'
            + _csv_rows({"circle": d["circle"][1:], "square": d["square"]})
        ),
        ("m.csv:2", "U+000A"),
    ),
    (
        "one image as x and d/../x",
        "data/square/../circle/X listed after data/circle/X, labelled square",
        "m.csv",
        lambda d: (
            "uri,label\n"
            + _csv_rows(d)
            + d["circle"][0].replace("data/circle", "data/square/../circle")
            + ",square\n"
        ),
        ("m.csv:14", "duplicate uri", "first on line 2"),
    ),
    (
        "one image as x and d//x",
        "data//circle/X listed after data/circle/X",
        "m.csv",
        lambda d: "uri,label\n" + _csv_rows(d) + d["circle"][0].replace("/", "//", 1) + ",circle\n",
        ("m.csv:14", "duplicate uri", "first on line 2"),
    ),
]


@pytest.mark.parametrize("case", MANIFESTS, ids=[c[0] for c in MANIFESTS])
def test_a_mislabelling_manifest_is_refused(case, data, tmp_path, row):
    name, injected, filename, build, names = case
    (tmp_path / filename).write_text(build(data))
    code, last, stderr = _train(filename, tmp_path)
    last = last.replace(f"{tmp_path}/", "")
    row(area=LABELS, case=name, injected=injected, observed=f"exit {code}: `{last}`")
    assert code == 2 and last.startswith("error: "), stderr
    for needle in names:
        assert needle in last
    assert not (tmp_path / "out" / "labels.txt").exists()


def test_jsonl_integer_labels_are_class_names(data, tmp_path, row):
    lines = [
        json.dumps({"uri": p, "label": 1 if c == "circle" else "2"})
        for c, paths in data.items()
        for p in paths
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    code, last, stderr = _run("pack", "--source", "m.jsonl", "--output", "packed", cwd=tmp_path)
    classes = json.loads((tmp_path / "packed" / "index.json").read_text())["class_names"]
    row(
        area=LABELS,
        case="JSONL integer labels",
        injected='label 1 (a JSON integer) and "2" (a string), packed',
        observed=f"exit {code}, classes {classes}: `{_message(last)}`",
    )
    assert code == 0 and classes == ["1", "2"], stderr


@pytest.fixture
def packs(tmp_path):
    """tmp/src: two class folders of six images each; pack into tmp/out."""
    write_learnable_dataset(
        str(tmp_path / "src"), classes=2, per_class=6, min_size=24, max_size=32, seed=5
    )
    return tmp_path


def _pack(cwd: Path, *extra: str) -> tuple[int, str, str]:
    return _run("pack", "--source", "src", "--output", "out", *extra, cwd=cwd)


def _add_class(src: Path) -> None:
    (src / "aaa").mkdir()
    for i, image in enumerate(sorted((src / "circle").iterdir())[:3]):
        shutil.copy(image, src / "aaa" / f"a{i}{image.suffix}")


def _files(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_a_class_added_between_parts_is_refused(packs, row):
    assert _pack(packs, "--parts", "2", "--part", "0")[0] == 0
    _add_class(packs / "src")
    code, last, stderr = _pack(packs, "--parts", "2", "--part", "1")
    row(
        area=LABELS,
        case="pack: a class folder added between --part 0 and --part 1",
        injected="src/aaa/ (3 images) created after part 0 of 2 finished",
        observed=f"exit {code}: `{last}`",
    )
    assert code == 2 and "part 0 was packed from another version" in last, stderr
    assert "now: aaa, circle, square" in last and not (packs / "out" / "_SUCCESS").exists()


def test_a_resume_after_the_source_changed_is_refused(packs, row):
    assert _pack(packs, "--shard-size-mb", "0.000001")[0] == 0
    for name in ("index.json", "_SUCCESS", "parts/00000.done"):
        (packs / "out" / name).unlink()  # killed before its part finished
    src = packs / "src"
    moved = sorted((src / "square").iterdir())[0]
    moved.rename(src / "circle" / moved.name)
    code, last, stderr = _pack(packs, "--shard-size-mb", "0.000001")
    row(
        area=LABELS,
        case="pack: resume after the source changed",
        injected="a pack killed before its part finished; one square image moved to circle/; "
        "the same command again",
        observed=f"exit {code}: `{last}`",
    )
    assert code == 2 and "shard-00000-00000.tar was packed from another version" in last, stderr


def test_reruns_onto_a_finished_pack(packs, row):
    assert _pack(packs)[0] == 0
    before = _files(packs / "out")
    code, last, stderr = _pack(packs)
    row(
        area=LABELS,
        case="pack: the same command onto a finished pack",
        injected="trainer pack run again with the same flags and source",
        observed=f"exit {code}, {len(before)} files untouched: `{_message(last)}`",
    )
    assert code == 0 and "already complete" in last and _files(packs / "out") == before, stderr
    shutil.copytree(packs / "src", packs / "src2")
    for case, injected, args, needle in (
        ("another --source", "--source src2 (a copy)", ("--source", "src2"), "source src → src2"),
        ("another setting", "--quality 50", ("--quality", "50"), "quality 90 → 50"),
    ):
        flags = dict(zip(("--source", "--output"), ("src", "out"), strict=True))
        flags.update(dict(zip(args[::2], args[1::2], strict=True)))
        code, last, stderr = _run("pack", *[x for kv in flags.items() for x in kv], cwd=packs)
        row(
            area=LABELS,
            case=f"pack: {case} onto a finished pack",
            injected=f"trainer pack again with {injected}",
            observed=f"exit {code}: `{last}`",
        )
        assert code == 2 and needle in last and _files(packs / "out") == before, stderr
    _add_class(packs / "src")
    code, last, stderr = _pack(packs)
    row(
        area=LABELS,
        case="pack: the source changed after the pack finished",
        injected="src/aaa/ added, then trainer pack again with the same flags",
        observed=f"exit {code}: `{last}`",
    )
    assert code == 2 and "finished pack of another version" in last, stderr
    assert _files(packs / "out") == before


def test_symlinks_out_of_the_root_and_loops_are_skipped(packs, row):
    src, outside = packs / "src", packs / "outside"
    outside.mkdir()
    for i, image in enumerate(sorted((src / "circle").iterdir())[:4]):
        shutil.copy(image, outside / f"o{i}{image.suffix}")
    os.symlink("../../outside", src / "circle" / "more")
    os.symlink(outside, src / "elsewhere")  # a class folder outside the root
    os.symlink("..", src / "square" / "loop")
    square = sorted((src / "square").glob("*.*"))[0]
    os.symlink(f"../square/{square.name}", src / "circle" / f"alias{square.suffix}")
    code, _, stderr = _pack(packs)
    warning = next(_message(x) for x in stderr.splitlines() if "symlink" in x)
    packed = json.loads((packs / "out" / "index.json").read_text())
    n = len(packed["samples"]["label"])
    observed = f"exit {code}, {n} samples, classes {packed['class_names']}"
    warning = warning.replace(f"{packs}/", "")
    for case, injected, kind in (
        (
            "symlinks out of the root",
            "in --source: circle/more -> ../../outside (4 images), elsewhere -> /…/outside "
            "(a class folder)",
            "2 leading outside it",
        ),
        ("a symlink to an ancestor (a loop)", "square/loop -> ..", "1 looping back"),
        (
            "a symlink to an image of another class",
            "circle/alias.jpg -> ../square/<an image>",
            "1 naming files also listed",
        ),
    ):
        row(area=SYMLINKS, case=case, injected=injected, observed=f"{observed}; `{warning}`")
        assert kind in warning
    assert code == 0 and n == 12 and packed["class_names"] == ["circle", "square"], stderr
    assert "skipped 4 symlinks" in warning
