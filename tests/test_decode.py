"""decode_image against the bad-image corpus, on both JPEG backends, plus shape/dtype/limits."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from support.badimages import GRADIENT, QUADRANTS, Check, bad_image_cases

from trainer.data import decode
from trainer.data.decode import REASONS, ImageDecodeError, decode_image
from trainer.dev.synthetic import natural_image

CASES = bad_image_cases()
# The corpus is checked at a non-square size, so swapped axes cannot pass by accident.
SIZE = (32, 48)


@pytest.fixture(params=["simplejpeg", "pillow"])
def backend(request, monkeypatch):
    """Run a test with each JPEG backend; "pillow" is the fallback without simplejpeg."""
    if request.param == "simplejpeg":
        if decode.simplejpeg is None:
            pytest.skip("simplejpeg is not installed")
    else:
        monkeypatch.setattr(decode, "simplejpeg", None)
    return request.param


def _jpeg(img: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, backend):
    kind, detail = case.expect
    if kind == "decodes":
        out = decode_image(case.data, size=SIZE)
        assert out.shape == (*SIZE, 3) and out.dtype == np.uint8
        assert detail.verify(out) == []
        return
    if case.strict_jpeg_only and backend == "pillow":
        pytest.skip("only a strict JPEG decoder can see this damage")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(case.data, size=SIZE)
    assert info.value.reason == detail, str(info.value)
    assert info.value.reason in REASONS
    message = str(info.value)
    assert message and "\n" not in message


def test_corpus_has_the_required_cases():
    names = {c.name for c in CASES}
    assert len(CASES) >= 15 and len(names) == len(CASES)
    for required in ("truncated_jpeg", "empty", "html_error_page", "png_named_jpg",
                     "cmyk_jpeg_adobe", "gray16_png_gradient", "grayscale_png", "rgba_png",
                     "palette_png", "palette_transparency_png", "animated_gif",
                     "bomb_png_50000x50000", "one_by_one", "exif_orientation_6",
                     "exif_orientation_8", "tiff_lzw", "webp_lossless", "random_garbage",
                     "corrupt_middle_jpeg"):  # fmt: skip
        assert required in names
    bomb = next(c for c in CASES if c.name == "bomb_png_50000x50000")
    assert len(bomb.data) < 1000


def test_checks_catch_the_mistakes_they_guard_against():
    """The corpus checks fail on what a naive decoder produces, so they can fail at all."""
    by_name = {c.name: c for c in CASES}
    # Pillow's own I;16 → RGB conversion clips at 255: a white picture.
    clipped = Image.open(io.BytesIO(by_name["gray16_png_gradient"].data)).convert("RGB")
    assert Check("gradient", GRADIENT).verify(np.asarray(clipped.resize((48, 32))))
    # Ignoring EXIF orientation leaves the quadrants sideways.
    sideways = Image.open(io.BytesIO(by_name["exif_orientation_6"].data)).convert("RGB")
    assert by_name["exif_orientation_6"].expect[1].verify(np.asarray(sideways.resize((48, 32))))
    # ...and applying it upside down (orientation 8's rotation to an orientation-6 file) too.
    wrong = sideways.transpose(Image.Transpose.ROTATE_90)
    assert Check("upright", dict(QUADRANTS)).verify(np.asarray(wrong.resize((48, 32))))
    # The second GIF frame is blue, not red.
    gif = Image.open(io.BytesIO(by_name["animated_gif"].data))
    gif.seek(1)
    assert by_name["animated_gif"].expect[1].verify(np.asarray(gif.convert("RGB")))


@pytest.mark.parametrize("size", [(32, 48), (48, 32), (7, 5), (224, 224), (1, 300)])
def test_output_shape_is_exactly_height_width_3(size, backend):
    data = _jpeg(natural_image(np.random.default_rng(1), width=400, height=300))
    out = decode_image(data, size=size)
    assert out.shape == (size[0], size[1], 3)
    assert out.dtype == np.uint8
    tiny = decode_image(next(c.data for c in CASES if c.name == "one_by_one"), size=size)
    assert tiny.shape == (size[0], size[1], 3)


def test_float32_is_uint8_scaled_to_unit_range():
    data = _jpeg(natural_image(np.random.default_rng(2), width=300, height=200))
    as_int = decode_image(data, size=(40, 60))
    as_float = decode_image(data, size=(40, 60), dtype="float32")
    assert as_float.dtype == np.float32 and as_float.shape == (40, 60, 3)
    assert as_float.min() >= 0.0 and as_float.max() <= 1.0
    assert as_int.max() > 200 and as_int.min() < 60  # a real range, so the scale is checked
    np.testing.assert_allclose(as_float, as_int / 255.0, atol=1e-6)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("size", [(120, 70), (100, 800)])
def test_dct_scaled_jpeg_matches_full_decode(orientation, size, backend):
    """DCT-domain downscaling (also with axes swapped by EXIF) stays close to a full decode."""
    img = natural_image(np.random.default_rng(3), width=1600, height=900)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(img, exif=exif.tobytes())
    out = decode_image(data, size=size).astype(np.int16)
    full = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    reference = np.asarray(full.resize((size[1], size[0]), Image.Resampling.BILINEAR), np.int16)
    assert np.abs(out - reference).mean() < 3.0


@pytest.mark.parametrize("orientation", [6, 8])
def test_dct_scale_is_chosen_for_the_stored_orientation(orientation, backend):
    """A sideways-stored 1600x900 JPEG shown upright at 800 wide needs full-scale decoding.

    Choosing the DCT scale from the upright target size would decode at 1/2 (800x450 stored,
    450 wide upright) and upsample, blurring fine detail; noise makes that visible.
    """
    noise = np.random.default_rng(8).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(Image.fromarray(noise), exif=exif.tobytes())
    out = decode_image(data, size=(450, 800)).astype(np.int16)
    full = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB")))
    # The same filter the decoder picks for a 3.5x shrink of one axis: area averaging.
    reference = cv2.resize(full, (800, 450), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(out - reference).mean() < 1.0


def test_max_pixels_checked_per_call_without_global_state():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    data = _jpeg(Image.new("RGB", (100, 80), (1, 2, 3)))
    assert decode_image(data, size=(8, 8), max_pixels=8000).shape == (8, 8, 3)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, size=(8, 8), max_pixels=7999)
    assert info.value.reason == "too_large"
    assert "100x80" in str(info.value)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_jpeg_is_rejected_wherever_it_is_cut(keep, backend):
    data = _jpeg(natural_image(np.random.default_rng(4), width=640, height=480))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: int(len(data) * keep)], size=(64, 64))
    assert info.value.reason == "truncated"


def test_missing_end_marker_is_rejected(backend):
    data = _jpeg(natural_image(np.random.default_rng(5), width=320, height=240))
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[:-2], size=(64, 64))
    assert info.value.reason == "truncated"


@pytest.mark.parametrize(
    ("data", "reason", "hint"),
    [
        (b"<html><body>Service Unavailable</body></html>", "not_an_image", "HTML"),
        (b'{"error": {"code": 404}}', "not_an_image", "JSON"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "not_an_image", "gzip"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab", "not_an_image", "LFS"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + bytes(40), "unsupported_format", "HEIC"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "unsupported_format", "SVG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(10), "corrupt", "PNG"),
    ],
    ids=["html", "json", "gzip", "lfs", "heic", "svg", "png-magic-only"],
)
def test_unidentified_bytes_get_a_hint(data, reason, hint):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, size=(8, 8))
    assert info.value.reason == reason
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (0, 5)},
        {"size": (5,)},
        {"size": (5, 5), "dtype": "float64"},
        {"size": (5, 5), "max_pixels": 0},
    ],
)
def test_bad_arguments_raise_value_error_not_decode_error(kwargs):
    with pytest.raises(ValueError) as info:
        decode_image(b"x", **kwargs)
    assert not isinstance(info.value, ImageDecodeError)


def test_threads_give_the_same_results_as_serial():
    rng = np.random.default_rng(6)
    blobs = [_jpeg(natural_image(rng, width=300 + 40 * i, height=200)) for i in range(8)]
    serial = [decode_image(b, size=(50, 40)) for b in blobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda b: decode_image(b, size=(50, 40)), blobs * 2))
    for i, arr in enumerate(threaded):
        np.testing.assert_array_equal(arr, serial[i % len(blobs)])


def _bands(width: int, height: int) -> bytes:
    """A JPEG with red left quarter, blue middle half and green right quarter."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 4] = (255, 0, 0)
    a[:, width // 4 : 3 * width // 4] = (0, 0, 255)
    a[:, 3 * width // 4 :] = (0, 255, 0)
    return _jpeg(Image.fromarray(a))


def test_crop_keeps_the_centre_and_squash_stretches(backend):
    data = _bands(400, 200)
    crop = decode_image(data, size=(100, 100), resize="crop").astype(int)
    # The centre 200x200 of a 400x200 picture is all blue (a few pixels of JPEG ringing aside).
    inner = crop[:, 4:-4]
    assert inner[..., 2].min() > 200 and inner[..., :2].max() < 60
    squash = decode_image(data, size=(100, 100), resize="squash").astype(int)
    assert squash[:, :10, 0].mean() > 200 and squash[:, -10:, 1].mean() > 200


def test_pad_keeps_everything_centred_on_black(backend):
    data = _bands(400, 200)
    pad = decode_image(data, size=(100, 100), resize="pad").astype(int)
    # 400x200 fits into 100x100 as 100x50, rows 25..74; the bands are all there.
    assert pad[:25].max() == 0 and pad[75:].max() == 0
    body = pad[27:73]
    assert body[:, 5:20, 0].mean() > 200 and body[:, 40:60, 2].mean() > 200
    assert body[:, 80:95, 1].mean() > 200


def _reference(data: bytes, size: tuple[int, int], resize: str) -> np.ndarray:
    """Full decode, upright, then crop/pad with Pillow: what each mode means."""
    full = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = size
    if resize == "crop":
        return np.asarray(ImageOps.fit(full, (w, h), Image.Resampling.BILINEAR), np.int16)
    return np.asarray(ImageOps.pad(full, (w, h), Image.Resampling.BILINEAR, color=0), np.int16)


@pytest.mark.parametrize("resize", ["crop", "pad"])
@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("size", [(120, 70), (64, 200)])
def test_crop_and_pad_with_dct_scaling_match_a_full_decode(resize, orientation, size, backend):
    img = natural_image(np.random.default_rng(3), width=1600, height=900)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(img, exif=exif.tobytes())
    out = decode_image(data, size=size, resize=resize)
    assert out.shape == (*size, 3)
    assert np.abs(out.astype(np.int16) - _reference(data, size, resize)).mean() < 4.0


def test_pad_decodes_at_a_smaller_dct_scale_than_crop():
    """pad needs only the fitted size: 1600x900 into 224x224 fits as 224x126."""
    assert decode._min_decode_size(1600, 900, 224, 224, "pad") == (224, 126)
    assert decode._min_decode_size(1600, 900, 224, 224, "crop") == (224, 224)
    assert decode._min_decode_size(1600, 900, 224, 224, "squash") == (224, 224)
    # Never more than the image itself (upscaling decodes at full size).
    assert decode._min_decode_size(100, 50, 224, 224, "pad") == (100, 50)


def test_crop_and_pad_of_png_and_greyscale():
    grey = Image.fromarray(np.full((30, 90), 200, np.uint8), "L")
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    pad = decode_image(buf.getvalue(), size=(30, 30), resize="pad")
    assert pad.shape == (30, 30, 3) and pad[:10].max() == 0 and pad[12:18].min() == 200
    crop = decode_image(buf.getvalue(), size=(30, 30), resize="crop")
    assert crop.shape == (30, 30, 3) and crop.min() == 200


def test_unknown_resize_mode_is_a_value_error():
    with pytest.raises(ValueError, match="resize"):
        decode_image(b"x", size=(8, 8), resize="stretch")
