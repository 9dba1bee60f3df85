"""Synthetic datasets: deterministic, the promised layout, mixed formats and sizes, photo-like."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data.decode import decode_image
from trainer.dev.synthetic import (
    CLASS_NAMES,
    natural_image,
    write_benchmark_images,
    write_learnable_dataset,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_natural_image_size_mode_and_determinism():
    a = natural_image(np.random.default_rng(0), width=300, height=200)
    b = natural_image(np.random.default_rng(0), width=300, height=200)
    c = natural_image(np.random.default_rng(1), width=300, height=200)
    assert a.mode == "RGB" and a.size == (300, 200)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert natural_image(np.random.default_rng(0), width=1, height=1).size == (1, 1)
    with pytest.raises(ValueError):
        natural_image(np.random.default_rng(0), width=0, height=5)


def test_natural_image_is_photo_like_not_flat_nor_noise():
    img = natural_image(np.random.default_rng(2), width=800, height=600)
    arr = np.asarray(img, np.float32)
    assert arr.std() > 20  # not flat colour
    # Neighbouring pixels are strongly correlated, unlike pure noise (correlation ~0).
    grey = arr.mean(axis=2)
    corr = np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1]
    assert corr > 0.8
    # ...but there is fine detail: the image is not just a blurred field.
    assert np.abs(np.diff(grey, axis=1)).mean() > 1.0
    # JPEG q90 lands in the range of photos (roughly 1-5 bits per pixel).
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    bits_per_pixel = buf.tell() * 8 / (800 * 600)
    assert 0.8 < bits_per_pixel < 6


def test_learnable_dataset_layout_formats_sizes(tmp_path):
    names = write_learnable_dataset(
        str(tmp_path), classes=4, per_class=6, min_size=40, max_size=90, seed=3
    )
    assert names == list(CLASS_NAMES[:4])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    sizes, exts = set(), set()
    for name in names:
        files = sorted((tmp_path / name).iterdir())
        assert len(files) == 6
        for f in files:
            assert f.name.startswith(f"{name}_")
            exts.add(f.suffix)
            with Image.open(f) as img:
                assert img.format == {".jpg": "JPEG", ".png": "PNG"}[f.suffix]
                assert all(40 <= s <= 90 for s in img.size)
                sizes.add(img.size)
            # Every file decodes with the pipeline's decoder.
            assert decode_image(f.read_bytes(), size=(32, 32)).shape == (32, 32, 3)
    assert exts == {".jpg", ".png"}
    assert len(sizes) > 10
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporaries left behind


def test_learnable_dataset_is_deterministic_for_a_seed(tmp_path):
    for run in ("a", "b", "c"):
        write_learnable_dataset(
            str(tmp_path / run), classes=3, per_class=4, seed=0 if run != "c" else 1
        )
    a, b, c = (_digest(tmp_path / run) for run in ("a", "b", "c"))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_learnable_classes_differ_in_shape(tmp_path):
    """The class signal is the shape: stripes cross each line of the frame several times,
    a circle at most once. Counted on a foreground mask: shapes are saturated colours on
    nearly grey backgrounds."""
    write_learnable_dataset(str(tmp_path), classes=3, per_class=10, min_size=64, max_size=96)

    def runs_per_line(path: Path) -> float:
        rgb = decode_image(path.read_bytes(), size=(48, 48)).astype(np.int16)
        fg = rgb.max(axis=2) - rgb.min(axis=2) > 60  # chroma
        starts = [np.diff(np.pad(m.astype(np.int8), ((0, 0), (1, 0))), axis=1) == 1
                  for m in (fg, fg.T)]  # fmt: skip
        return max(float(s.sum(axis=1).mean()) for s in starts)

    stripes = [runs_per_line(p) for p in sorted((tmp_path / "stripes").iterdir())]
    circles = [runs_per_line(p) for p in sorted((tmp_path / "circle").iterdir())]
    # Measured: stripes 6-9 runs per line, circles 0.5-0.9.
    assert min(stripes) > 4.0
    assert max(circles) < 1.5


def test_learnable_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_learnable_dataset(str(tmp_path), classes=1)
    with pytest.raises(ValueError):
        write_learnable_dataset(str(tmp_path), classes=len(CLASS_NAMES) + 1)
    with pytest.raises(ValueError):
        write_learnable_dataset(str(tmp_path), formats=("jpeg", "heic"))
    with pytest.raises(ValueError):
        write_learnable_dataset(str(tmp_path), min_size=100, max_size=50)


def test_learnable_dataset_other_formats(tmp_path):
    write_learnable_dataset(
        str(tmp_path), classes=2, per_class=3, formats=("webp", "png", "gif"), seed=1
    )
    exts = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert exts == {".webp", ".png", ".gif"}


def test_benchmark_images_layout_and_sides(tmp_path):
    write_benchmark_images(str(tmp_path), count=10, min_side=64, max_side=200, classes=3, seed=2)
    files = sorted(tmp_path.rglob("*.jpg"))
    assert len(files) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["class0", "class1", "class2"]
    assert [len(list((tmp_path / f"class{k}").iterdir())) for k in range(3)] == [4, 3, 3]
    longs, aspects = set(), set()
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            long, short = max(img.size), min(img.size)
            assert 64 <= long <= 200 and short >= long * 0.5 - 1
            longs.add(long)
            aspects.add(img.size[0] > img.size[1])
    assert len(longs) > 5
    assert aspects == {True, False}  # landscape and portrait both present


def test_benchmark_images_fixed_side_and_determinism(tmp_path):
    for run in ("a", "b"):
        write_benchmark_images(str(tmp_path / run), count=4, fixed_side=96, seed=9)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for f in (tmp_path / "a").rglob("*.jpg"):
        with Image.open(f) as img:
            assert max(img.size) == 96
