"""A corpus of bad and unusual images, with what a decoder should make of each.

Used by tests/test_decode.py now and by the reliability suite (which writes the cases into a
bucket under `case.filename` and checks the pipeline skips or decodes each one).

    from badimages import bad_image_cases  # tests/ is on sys.path under pytest

    for case in bad_image_cases():
        kind, detail = case.expect
        if kind == "decodes":
            problems = detail.verify(decode_image(case.data, size=(32, 48)))  # [] when right
        else:
            ...  # decode_image must raise ImageDecodeError with .reason == detail

All bytes are generated here (deterministically), so the corpus needs no binary fixtures.
Decoded images are checked by the mean colour of regions (quadrant centres, vertical strips),
which works at any output size and tolerates JPEG loss and bilinear blending at the borders.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]

RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 255, 0)
BLUE: RGB = (0, 0, 255)
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
# The quadrant pattern: a picture whose orientation and mirroring can both be read back.
QUADRANTS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": WHITE}


def _region(arr: np.ndarray, name: str) -> np.ndarray:
    """The pixels of a named region, away from borders where resizing blends neighbours."""
    h, w = arr.shape[:2]

    def span(n: int, lo: float, hi: float) -> slice:
        a = int(n * lo)
        return slice(a, max(a + 1, round(n * hi)))

    quarter = {"top": span(h, 0.1, 0.4), "bottom": span(h, 0.6, 0.9)}
    side = {"left": span(w, 0.1, 0.4), "right": span(w, 0.6, 0.9)}
    strips = {  # vertical strips across the full height, for horizontal gradients
        "left_strip": span(w, 0.0, 0.1),
        "centre_strip": span(w, 0.45, 0.55),
        "right_strip": span(w, 0.9, 1.0),
    }
    if name == "all":
        return arr
    if name in strips:
        return arr[:, strips[name]]
    vertical, horizontal = name.split("_")
    return arr[quarter[vertical], side[horizontal]]


@dataclass(frozen=True)
class Check:
    """What a correctly decoded case looks like: mean RGB per region, within a tolerance."""

    description: str
    regions: dict[str, RGB]
    tolerance: float = 16.0

    def verify(self, arr: np.ndarray) -> list[str]:
        """Problems found in a decoded (H, W, 3) uint8 array; empty when it is right."""
        if arr.ndim != 3 or arr.shape[2] != 3:
            return [f"expected an (H, W, 3) array, got shape {arr.shape}"]
        problems = []
        for name, want in self.regions.items():
            got = _region(arr, name).reshape(-1, 3).mean(axis=0)
            if np.abs(got - np.array(want)).max() > self.tolerance:
                got_s = tuple(round(float(v)) for v in got)
                problems.append(f"{self.description}: {name} is {got_s}, expected {want}")
        return problems


@dataclass(frozen=True)
class Case:
    """One file: its bytes, the extension to name it with, and the expected outcome.

    expect is ("decodes", Check) or ("rejected", reason), reason being an ImageDecodeError
    reason. strict_jpeg_only marks damage that only a decoder which treats libjpeg's
    "corrupt data" warnings as errors can see (simplejpeg strict; Pillow decodes garbage).
    """

    name: str
    data: bytes
    ext: str
    expect: tuple[str, Check | str]
    strict_jpeg_only: bool = field(default=False)

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.ext}"


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _quadrant_image(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    img = Image.new("RGB", (width, height))
    w2, h2 = width // 2, height // 2
    for (vertical, horizontal), colour in zip(
        [(v, h) for v in ("top", "bottom") for h in ("left", "right")],
        [QUADRANTS[f"{v}_{h}"] for v in ("top", "bottom") for h in ("left", "right")],
        strict=True,
    ):
        x0 = 0 if horizontal == "left" else w2
        y0 = 0 if vertical == "top" else h2
        img.paste(
            colour, (x0, y0, x0 + (width - w2 if x0 else w2), y0 + (height - h2 if y0 else h2))
        )
    return img if mode == "RGB" else img.convert(mode)


def _photo_jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    """A photo-like JPEG (not flat colour), so damage lands in real entropy-coded data."""
    from trainer.dev.synthetic import natural_image

    return _encode(
        natural_image(np.random.default_rng(seed), width=width, height=height), "JPEG", quality=90
    )


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header declares width x height RGB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_bomb(side: int = 60_000) -> bytes:
    """A tiny JPEG whose SOF0 header is patched to declare side x side."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)  # height, width
    return bytes(data)


def _exif_rotated_jpeg(orientation: int) -> bytes:
    """A JPEG stored sideways with the EXIF orientation that puts the quadrants upright."""
    upright = _quadrant_image(64, 48)
    # Orientation 6 is displayed by rotating 90° clockwise, so it is stored 90° anticlockwise.
    stored = upright.transpose(
        Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE, GREEN)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette(with_transparency: bool) -> bytes:
    img = _quadrant_image().quantize(colors=4)
    if with_transparency:
        # Make the palette entry used by the red quadrant transparent: Keras' convert("RGB")
        # ignores transparency, so red must still come out red.
        red_index = img.getpixel((5, 5))
        return _encode(img, "PNG", transparency=red_index)
    return _encode(img, "PNG")


def _rgba() -> bytes:
    img = _quadrant_image().convert("RGBA")
    alpha = Image.new("L", img.size, 255)
    alpha.paste(0, (0, 0, 32, 24))  # the red quadrant fully transparent: alpha is dropped
    img.putalpha(alpha)
    return _encode(img, "PNG")


def _gradient16(width: int = 256, height: int = 16) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


# Expected mean of the gradient strips: 5 %, 50 % and 95 % of 255. Clipping at 255 (Pillow's
# own I;16 → L conversion) would make every strip 255, and a wrong byte order would scramble it.
GRADIENT = {"left_strip": (13, 13, 13), "centre_strip": (128,) * 3, "right_strip": (242,) * 3}


def _gray_quadrants() -> Check:
    luma = {k: round(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) for k, c in QUADRANTS.items()}
    return Check("greyscale quadrants", {k: (v, v, v) for k, v in luma.items()})


def bad_image_cases() -> list[Case]:
    """The corpus; see the module docstring."""
    quadrants = Check("quadrants red/green/blue/white", dict(QUADRANTS))
    upright = Check("upright: red corner top-left", dict(QUADRANTS), tolerance=24)
    photo = _photo_jpeg()
    middle = len(photo) // 2
    garbled = bytes(b if b != 0xFF else 0x00 for b in np.random.default_rng(1).bytes(300))
    cmyk = Image.new("CMYK", (64, 48))
    for box, ink in (
        ((0, 0, 32, 24), (0, 255, 255, 0)),  # red
        ((32, 0, 64, 24), (255, 0, 255, 0)),  # green
        ((0, 24, 32, 48), (255, 255, 0, 0)),  # blue
        ((32, 24, 64, 48), (0, 0, 0, 0)),  # white (no ink)
    ):
        cmyk.paste(ink, box)
    gray16 = Image.fromarray(_gradient16())  # mode I;16
    gray16b = Image.frombytes("I;16B", gray16.size, _gradient16().astype(">u2").tobytes())
    gray32 = Image.fromarray(_gradient16().astype(np.int32))  # mode I
    grayf = Image.fromarray((_gradient16() / 65535).astype(np.float32))  # mode F, 0..1
    one_bit = Image.new("1", (64, 48), 0)
    one_bit.paste(1, (32, 0, 64, 48))

    return [
        # --- rejected -----------------------------------------------------------------------
        Case("empty", b"", "jpg", ("rejected", "empty")),
        Case("truncated_jpeg", photo[: int(len(photo) * 0.6)], "jpg", ("rejected", "truncated")),
        Case(
            "truncated_png",
            _encode(_quadrant_image(), "PNG")[:-60],
            "png",
            ("rejected", "truncated"),
        ),
        Case(
            "html_error_page",
            b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
            b"<body><h1>Access denied</h1></body></html>\n",
            "jpg",
            ("rejected", "not_an_image"),
        ),
        Case(
            "xml_storage_error",
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code></Error>",
            "png",
            ("rejected", "not_an_image"),
        ),
        Case(
            "random_garbage",
            np.random.default_rng(7).bytes(4096),
            "jpg",
            ("rejected", "not_an_image"),
        ),
        Case("bomb_png_50000x50000", _png_bomb(), "png", ("rejected", "too_large")),
        Case("bomb_jpeg_60000x60000", _jpeg_bomb(), "jpg", ("rejected", "too_large")),
        # A run of 0xFF in the scan: an invalid marker, which every decoder treats as fatal.
        Case(
            "corrupt_middle_jpeg",
            photo[:middle] + b"\xff" * 300 + photo[middle + 300 :],
            "jpg",
            ("rejected", "corrupt"),
        ),
        # Random bytes inside the scan: only a strict decoder notices (Pillow decodes garbage).
        Case(
            "garbled_scan_jpeg",
            photo[:middle] + garbled + photo[middle + 300 :],
            "jpg",
            ("rejected", "corrupt"),
            strict_jpeg_only=True,
        ),
        Case(
            "jpeg_cut_in_header",
            photo[:2] + b"\xff\xe0\x00\x10JFIF",
            "jpg",
            ("rejected", "truncated"),
        ),
        # --- decodes ------------------------------------------------------------------------
        Case(
            "one_by_one",
            _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
            "png",
            ("decodes", Check("a single green pixel everywhere", {"all": (10, 200, 30)})),
        ),
        Case("png_named_jpg", _encode(_quadrant_image(), "PNG"), "jpg", ("decodes", quadrants)),
        Case(
            "rgb_jpeg",
            _encode(_quadrant_image(), "JPEG", quality=95),
            "jpg",
            ("decodes", quadrants),
        ),
        Case(
            "progressive_jpeg",
            _encode(_quadrant_image(), "JPEG", quality=95, progressive=True),
            "jpg",
            ("decodes", quadrants),
        ),
        Case(
            "cmyk_jpeg_adobe",
            _encode(cmyk, "JPEG", quality=95),
            "jpg",
            ("decodes", Check("CMYK quadrants as RGB", dict(QUADRANTS))),
        ),
        Case(
            "grayscale_jpeg",
            _encode(_quadrant_image(mode="L"), "JPEG", quality=95),
            "jpg",
            ("decodes", _gray_quadrants()),
        ),
        Case(
            "grayscale_png",
            _encode(_quadrant_image(mode="L"), "PNG"),
            "png",
            ("decodes", _gray_quadrants()),
        ),
        Case(
            "la_png",
            _encode(_quadrant_image(mode="LA"), "PNG"),
            "png",
            ("decodes", _gray_quadrants()),
        ),
        Case(
            "one_bit_png",
            _encode(one_bit, "PNG"),
            "png",
            (
                "decodes",
                Check("1-bit: black left, white right", {"top_left": BLACK, "top_right": WHITE}),
            ),
        ),
        Case(
            "gray16_png_gradient",
            _encode(gray16, "PNG"),
            "png",
            ("decodes", Check("16-bit gradient scaled, not clipped", GRADIENT)),
        ),
        Case(
            "gray16b_tiff_gradient",
            _encode(gray16b, "TIFF"),
            "tif",
            ("decodes", Check("big-endian 16-bit gradient scaled", GRADIENT)),
        ),
        Case(
            "gray32_tiff_gradient",
            _encode(gray32, "TIFF"),
            "tif",
            ("decodes", Check("mode I gradient up to 65535 scaled", GRADIENT)),
        ),
        Case(
            "float_tiff_gradient",
            _encode(grayf, "TIFF"),
            "tif",
            ("decodes", Check("float 0..1 gradient scaled", GRADIENT)),
        ),
        Case(
            "rgba_png",
            _rgba(),
            "png",
            ("decodes", Check("alpha dropped: transparent red stays red", dict(QUADRANTS))),
        ),
        Case("palette_png", _palette(False), "png", ("decodes", quadrants)),
        Case(
            "palette_transparency_png",
            _palette(True),
            "png",
            ("decodes", Check("palette transparency ignored", dict(QUADRANTS))),
        ),
        Case(
            "animated_gif",
            _animated_gif(),
            "gif",
            ("decodes", Check("first frame (red)", {"all": RED})),
        ),
        Case("exif_orientation_6", _exif_rotated_jpeg(6), "jpg", ("decodes", upright)),
        Case("exif_orientation_8", _exif_rotated_jpeg(8), "jpg", ("decodes", upright)),
        Case(
            "tiff_lzw",
            _encode(_quadrant_image(), "TIFF", compression="tiff_lzw"),
            "tif",
            ("decodes", quadrants),
        ),
        Case(
            "webp_lossless",
            _encode(_quadrant_image(), "WEBP", lossless=True),
            "webp",
            ("decodes", quadrants),
        ),
        Case(
            "webp_lossy",
            _encode(_quadrant_image(), "WEBP", quality=90),
            "webp",
            ("decodes", Check("lossy WebP quadrants", dict(QUADRANTS), tolerance=24)),
        ),
        Case("bmp", _encode(_quadrant_image(), "BMP"), "bmp", ("decodes", quadrants)),
    ]
