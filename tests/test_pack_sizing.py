"""trainer pack --short-side and --raw-max-pixels: images sized by their shorter side, small ones
stored as raw pixels (.npy) that decode to what the JPEG path gives; the settings recorded in
index.json, a resume with other sizes refused, and the trainer's warning for a mis-sized pack."""

from __future__ import annotations

import io
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from trainer.config.load import build_config
from trainer.data.decode import ImageDecodeError, decode_image
from trainer.data.raw_pixels import encode_raw
from trainer.data.storage import Storage
from trainer.errors import ConfigError, DataError
from trainer.pack.format import open_packed
from trainer.pack.sizing import size_advice, sizing_scale
from trainer.pack.writer import PackConfig, pack
from trainer.train.inputs import load_data

# (width, height) of the sources: landscape, portrait, small square, already small.
SOURCES = [(120, 60), (50, 100), (64, 64), (20, 30)]


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i, (w, h) in enumerate(SOURCES):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            tmp_path / f"img{i}.png"
        )
        rows.append(f"img{i}.png,{'ab'[i % 2]}")
    (tmp_path / "m.csv").write_text("uri,label\n" + "\n".join(rows) + "\n")
    return tmp_path / "m.csv"


def _payloads(out, packed):
    by_source = {}
    for p in range(len(packed)):
        data = (out / packed.shards[packed.sample_shard[p]]).read_bytes()
        payload = data[packed.offset[p] : packed.offset[p] + packed.size[p]]
        by_source[packed.sources[p].rsplit("/", 1)[-1]] = (packed.exts[p], payload)
    return by_source


def test_short_side_sizes_by_the_shorter_side_and_small_ones_are_raw(manifest, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(manifest), output=str(out), short_side=30, raw_max_pixels=1000)
    assert pack(cfg, Storage()).samples == 4
    packed = open_packed(str(out), Storage())
    assert {k: v for k, v in packed.settings.items() if k != "source_version"} == cfg.settings()
    assert packed.settings["short_side"] == 30 and packed.settings["raw_max_pixels"] == 1000
    stored = _payloads(out, packed)
    # 120x60 -> 60x30 (1,800 px: JPEG); 50x100 -> 30x60 (JPEG); 64x64 -> 30x30 (900 px: raw);
    # 20x30 is under the short side: kept at 20x30 (600 px), and small enough to be raw.
    assert {k: v[0] for k, v in stored.items()} == {
        "img0.png": "jpg",
        "img1.png": "jpg",
        "img2.png": "npy",
        "img3.png": "npy",
    }
    assert Image.open(io.BytesIO(stored["img0.png"][1])).size == (60, 30)
    assert Image.open(io.BytesIO(stored["img1.png"][1])).size == (30, 60)
    src = Image.open(manifest.parent / "img2.png")
    raw = np.load(io.BytesIO(stored["img2.png"][1]))  # plain .npy, as WebDataset reads it
    assert np.array_equal(
        raw, decode_image((manifest.parent / "img2.png").read_bytes(), size=(30, 30))
    )
    assert src.size == (64, 64)
    assert np.array_equal(
        np.load(io.BytesIO(stored["img3.png"][1])),
        np.asarray(Image.open(manifest.parent / "img3.png").convert("RGB")),
    )
    # The shards stay standard tars: the .npy members are listed like the others.
    with tarfile.open(out / packed.shards[0]) as tar:
        assert any(n.endswith(".npy") for n in tar.getnames())


def test_raw_pixels_decode_like_the_same_pixels_as_png():
    pixels = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    for resize in ("squash", "crop", "pad"):
        for dtype in ("uint8", "float32"):
            got = decode_image(encode_raw(pixels), size=(24, 24), resize=resize, dtype=dtype)
            want = decode_image(png.getvalue(), size=(24, 24), resize=resize, dtype=dtype)
            assert np.array_equal(got, want), (resize, dtype)
    blob = encode_raw(pixels)
    with pytest.raises(ImageDecodeError, match="bytes for a"):
        decode_image(blob[:-5], size=(8, 8))
    with pytest.raises(ImageDecodeError, match="out of range"):
        decode_image(blob, size=(8, 8), max_pixels=100)


def test_a_resume_with_other_sizes_is_refused(manifest, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(manifest), output=str(out), short_side=30, shard_size_mb=1e-6)
    pack(cfg, Storage())
    for name in ("index.json", "_SUCCESS", "parts/00000.done"):
        (out / name).unlink()  # killed before its part finished
    for other in ({"short_side": 40}, {"short_side": 0}, {"raw_max_pixels": 500}):
        with pytest.raises((ConfigError, DataError), match="other settings"):
            pack(PackConfig(**{**cfg.__dict__, **other}), Storage())
    assert pack(cfg, Storage()).merged  # the same flags resume


def test_sizing_scale_and_advice():
    assert sizing_scale(1200, 1600, max_side=0, short_side=256) == pytest.approx(256 / 1200)
    assert sizing_scale(1200, 1600, max_side=448, short_side=0) == pytest.approx(448 / 1600)
    assert sizing_scale(1200, 1600, max_side=448, short_side=256) == pytest.approx(256 / 1200)
    assert sizing_scale(600, 2400, max_side=448, short_side=256) == pytest.approx(448 / 2400)
    assert sizing_scale(100, 200, max_side=448, short_side=256) == 1.0
    assert size_advice({"short_side": 256}, image_size=(224, 224)) is None
    assert size_advice({"max_side": 448}, image_size=(224, 224)) is None
    assert size_advice({}, image_size=(224, 224)) is None
    assert "upscaled" in size_advice({"short_side": 160}, image_size=(224, 224))
    assert "--short-side 256" in size_advice({"max_side": 1024}, image_size=(224, 224))


def test_the_trainer_warns_about_a_pack_sized_for_another_training_size(manifest, tmp_path, caplog):
    out = tmp_path / "out"
    pack(PackConfig(source=str(manifest), output=str(out), short_side=30), Storage())
    config = build_config(
        ["--data", str(out), "--output", str(tmp_path / "run"), "--image-size", "64"], env={}
    )
    with caplog.at_level(logging.INFO, logger="trainer.train.inputs"):
        data = load_data(config, Storage())
    assert len(data.index) == 4
    lines = [r.getMessage() for r in caplog.records]
    assert any("is packed: 4 samples" in m and "short_side 30" in m for m in lines), lines
    assert any("--short-side 30, smaller than --image-size 64" in m for m in lines), lines
