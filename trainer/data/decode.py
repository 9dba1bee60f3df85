"""Image bytes → fixed-size RGB array: the decode step of the input pipeline.

    from trainer.data.decode import ImageDecodeError, decode_image

    try:
        x = decode_image(blob, size=(224, 224), dtype="float32")  # (224, 224, 3) in [0, 1]
    except ImageDecodeError as e:
        log.warning("skipping %s: %s", name, e)  # e.reason: "truncated", "not_an_image", ...

It runs on a thread pool, so the per-image work is a few calls into C that release the GIL:

- Raw pixels (`.npy`, what `trainer pack --raw-max-pixels` stores for small images) are only
  resized.

- JPEG is decoded already downscaled in the DCT domain to the smallest scale that is still at
  least the target size, by simplejpeg (libjpeg-turbo, any M/8 scale) when it is installed, else
  by Pillow's `draft` (1/2, 1/4, 1/8); an image under twice that size is decoded whole, which
  is faster than a 5/8-7/8 scale. simplejpeg is measurably faster on photo-sized JPEGs and,
  in strict mode, rejects corrupt entropy data that Pillow decodes silently into garbage.
- Everything else goes through Pillow, then one bilinear resize to (width, height). The filter
  is "bilinear", matching Keras' `image_dataset_from_directory` defaults.
- `resize` says how the aspect ratio is treated: "squash" (the default) stretches to H×W, as
  Keras does; "crop" keeps it and cuts the centre H×W out of the image scaled to cover it
  (Keras' `crop_to_aspect_ratio`); "pad" keeps it and centres the image scaled to fit inside
  H×W on black (Keras' `pad_to_aspect_ratio`). The DCT scale is chosen per mode so that the
  side kept whole is still at least the target after scaling.
- EXIF orientation is applied after the resize (the image is resized to the *stored* orientation,
  then transposed), which is cheap on the small image and keeps DCT scaling valid.
- Colour: every Pillow mode becomes RGB the way Keras' `load_img` does (`convert("RGB")`, alpha
  dropped, palette looked up, CMYK incl. Adobe-inverted), except 16-bit and 32-bit integer
  greyscale (scaled from 0..65535, not clipped at 255) and float greyscale (0..1 when its maximum
  is <= 1, else clipped to 0..255).
- The pixel limit is checked from the header before any pixel is decoded, per call (no global
  Pillow settings are read or changed). Pillow's own bomb check still applies on top: images
  over 2 × `PIL.Image.MAX_IMAGE_PIXELS` are rejected as "too_large" whatever `max_pixels` says.
- Truncated files raise: Pillow's default (LOAD_TRUNCATED_IMAGES off) is relied on, never set.
"""

from __future__ import annotations

import io
import re

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from trainer.data.raw_pixels import MAGIC as RAW_MAGIC
from trainer.data.raw_pixels import RawPixelsError, decode_raw

try:  # Optional fast path; see the module docstring.
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the installation
    simplejpeg = None

__all__ = [
    "JPEG_BACKEND",
    "REASONS",
    "RESIZE_MODES",
    "ImageDecodeError",
    "decode_image",
    "upright_size",
]

JPEG_BACKEND = "simplejpeg" if simplejpeg is not None else "pillow"

RESIZE_MODES = ("squash", "crop", "pad")
# "crashed": the image killed a decode process (decode_pool.py) twice.
REASONS = (
    "empty",
    "not_an_image",
    "truncated",
    "too_large",
    "unsupported_format",
    "corrupt",
    "crashed",
)

_EXIF_ORIENTATION = 0x0112
# EXIF orientation → the transpose that puts the picture upright (as ImageOps.exif_transpose),
# on the (height, width[, channels]) array: views, no copy.
_TRANSPOSE = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90
}
_SWAPS_AXES = frozenset((5, 6, 7, 8))
# Magic numbers of formats we expect; a file starting with one is damaged, not "not an image".
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_UINT16_MODES = frozenset(("I;16", "I;16L", "I;16B", "I;16N"))


class ImageDecodeError(ValueError):
    """The bytes cannot be turned into an image.

    `reason` is one of REASONS, for counters and logs; `str(e)` is a one-line explanation.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(
    data: bytes,
    *,
    size: tuple[int, int],
    dtype: str = "uint8",
    max_pixels: int = 89_478_485,
    resize: str = "squash",
) -> np.ndarray:
    """Decode `data` to an array of shape (height, width, 3), `size` being (height, width).

    dtype "uint8" gives 0..255, "float32" gives [0, 1]; `resize` is one of RESIZE_MODES.
    Raises ImageDecodeError for anything that is not a usable image, and ValueError for bad
    arguments.
    """
    height, width = _check_args(size, dtype, max_pixels)
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not data:
        raise ImageDecodeError("empty", "the file is empty (0 bytes)")
    out = None
    if data[:6] == RAW_MAGIC:  # a packed image stored as pixels: no decode, one resize
        try:
            out = _fit(decode_raw(data, max_pixels=max_pixels), width, height, resize)
        except RawPixelsError as e:
            raise ImageDecodeError("corrupt", str(e)) from None
    elif simplejpeg is not None and data[:3] == b"\xff\xd8\xff":
        out = _decode_jpeg_fast(data, width, height, max_pixels, resize)
    if out is None:
        img = _open(data)
        try:
            w, h = img.size
            _check_pixels(w, h, max_pixels)
            out = _decode_to_target(img, data, width, height, resize)
        finally:
            img.close()
    if out.ndim == 2:  # greyscale was resized on one channel; spread it to three now
        out = np.repeat(out[:, :, None], 3, axis=2)
    if dtype == "float32":
        return np.multiply(out, np.float32(1 / 255), dtype=np.float32)
    return np.ascontiguousarray(out)


def upright_size(data: bytes) -> tuple[int, int]:
    """(height, width) of the picture as shown (EXIF orientation applied), from its header."""
    if not data:
        raise ImageDecodeError("empty", "the file is empty (0 bytes)")
    if simplejpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass
        else:
            return (w, h) if _jpeg_orientation(data) in _SWAPS_AXES else (h, w)
    img = _open(data)
    try:
        w, h = img.size
        return (w, h) if _orientation(img) in _SWAPS_AXES else (h, w)
    finally:
        img.close()


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
            "(a decompression bomb, or raise max_pixels)",
        )
    if w < 1 or h < 1:
        raise ImageDecodeError("corrupt", f"image header declares an empty size {w}x{h}")


def _decode_jpeg_fast(
    data: bytes, width: int, height: int, max_pixels: int, resize: str
) -> np.ndarray | None:
    """The common case, a YCbCr or greyscale JPEG, without Pillow: header, DCT-scaled decode
    and resize are each one C call that releases the GIL. None hands the file to the full path
    (CMYK, anything the header parser refuses, any decode error to be classified there)."""
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray", "RGB"):
        return None
    _check_pixels(w, h, max_pixels)
    orientation = _jpeg_orientation(data)
    tw, th = (height, width) if orientation in _SWAPS_AXES else (width, height)
    mw, mh = _min_decode_size(w, h, tw, th, resize)
    if _whole_is_cheaper(w, h, mw, mh):
        mw, mh = w, h
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if colorspace == "Gray" else "RGB",
            min_height=mh,
            min_width=mw,
            strict=True,  # raise on "corrupt data" warnings instead of decoding garbage
        )
    except ValueError:
        return None
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    return _resize_upright(pixels, tw, th, orientation, resize)


def _has_exif(data: bytes) -> bool:
    """Whether the JPEG has an APP1 "Exif" segment: a walk over the leading APPn/COM markers
    (a few steps, where searching the bytes would scan up to 64 KiB holding the GIL)."""
    pos = 2  # after SOI
    while pos + 10 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            return True
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return False  # past the application segments: DQT, SOF, ...
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def _jpeg_orientation(data: bytes) -> int:
    # Only files with an EXIF block pay for Pillow's header parser.
    if not _has_exif(data):
        return 1
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _orientation(img)
    except Exception:  # a damaged header: the decode itself will tell
        return 1


def _whole_is_cheaper(w: int, h: int, mw: int, mh: int) -> bool:
    """Whether to decode a w×h JPEG whole rather than DCT-scaled to at least mw×mh.

    Under twice the size needed, only a 5/8-7/8 scale could apply, and libjpeg-turbo has no SIMD
    path for those: a 7/8 decode of a 256 px short side took 0.47 ms, the whole one 0.30 ms, and
    the bilinear resize after it 0.1 ms. From twice the size on, scaling saves an area resize.
    """
    return w < 2 * mw and h < 2 * mh


def _min_decode_size(w: int, h: int, tw: int, th: int, resize: str) -> tuple[int, int]:
    """The smallest (width, height) a DCT-scaled decode of a w×h image may have for `resize`.

    squash and crop need both sides at least the target (crop cuts the longer one); pad scales
    the image to fit inside, so only the fitted size must be kept.
    """
    if resize != "pad":
        return tw, th
    if tw * h <= th * w:  # the width limits; integer arithmetic, no float rounding up
        fw, fh = tw, -(-h * tw // w)
    else:
        fw, fh = -(-w * th // h), th
    return max(1, min(w, fw)), max(1, min(h, fh))


def _fit(pixels: np.ndarray, tw: int, th: int, resize: str) -> np.ndarray:
    """(height, width[, 3]) `pixels` → (th, tw[, 3]) by `resize` (see the module docstring)."""
    h, w = pixels.shape[:2]
    if resize == "crop":
        # Cut the centre box of the target's aspect ratio first, then resize only that.
        scale = max(tw / w, th / h)
        cw, ch = min(w, max(1, round(tw / scale))), min(h, max(1, round(th / scale)))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return _resize(pixels[y0 : y0 + ch, x0 : x0 + cw], tw, th)
    if resize == "pad":
        scale = min(tw / w, th / h)
        rw, rh = min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))
        out = np.zeros((th, tw, *pixels.shape[2:]), dtype=pixels.dtype)
        x0, y0 = (tw - rw) // 2, (th - rh) // 2
        out[y0 : y0 + rh, x0 : x0 + rw] = _resize(pixels, rw, rh)
        return out
    return _resize(pixels, tw, th)


def _resize(pixels: np.ndarray, tw: int, th: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if (w, h) != (tw, th):
        # Bilinear like Keras; when an axis shrinks 2x or more (PNGs, no DCT scaling, or
        # EXIF-rotated shapes) area averaging, so that no detail aliases. OpenCV releases the
        # GIL for the whole resize.
        shrink = (w >= 2 * tw or h >= 2 * th) and w >= tw and h >= th
        pixels = cv2.resize(
            pixels, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return pixels


def _resize_upright(
    pixels: np.ndarray, tw: int, th: int, orientation: int, resize: str = "squash"
) -> np.ndarray:
    """Fit (height, width[, 3]) `pixels` to (th, tw), then apply the EXIF orientation."""
    pixels = _fit(pixels, tw, th, resize)
    if orientation in _TRANSPOSE:
        pixels = _TRANSPOSE[orientation](pixels)
    return pixels


def _check_args(size: tuple[int, int], dtype: str, max_pixels: int) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if dtype not in ("uint8", "float32"):
        raise ValueError(f'dtype must be "uint8" or "float32", got {dtype!r}')
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    return height, width


def _open(data: bytes) -> Image.Image:
    """Parse the header only (Pillow opens lazily)."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The warning arrives as an exception only when the process turned warnings into
        # errors; changing the warning filters here would be global, non-thread-safe state.
        raise ImageDecodeError("too_large", f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _load_error(e) from None


def _decode_to_target(
    img: Image.Image, data: bytes, width: int, height: int, resize: str
) -> np.ndarray:
    """Decode pixels to an (height, width) or (height, width, 3) uint8 array, upright."""
    is_jpeg = img.format in ("JPEG", "MPO")
    # For JPEG the EXIF block is parsed with the header; other formats may keep it after the
    # pixels (PNG eXIf), so they are read after loading.
    orientation = _orientation(img) if is_jpeg else 1
    # Resize to the stored orientation first and transpose the small result afterwards.
    tw, th = (height, width) if orientation in _SWAPS_AXES else (width, height)
    mw, mh = _min_decode_size(*img.size, tw, th, resize)
    try:
        if is_jpeg and simplejpeg is not None and img.mode in ("RGB", "L"):
            pixels = simplejpeg.decode_jpeg(
                data,
                colorspace="GRAY" if img.mode == "L" else "RGB",
                min_height=mh,
                min_width=mw,
                strict=True,
            )
            pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
        else:
            if is_jpeg:
                img.draft("RGB", (mw, mh))  # DCT scaling; keeps both sides >= the size given
            img.load()
            if not is_jpeg:
                orientation = _orientation(img)
                tw, th = (height, width) if orientation in _SWAPS_AXES else (width, height)
            pixels = np.asarray(_to_l_or_rgb(img))
        return _resize_upright(pixels, tw, th, orientation, resize)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError("too_large", f"decompression bomb: {e}") from None
    except MemoryError:
        raise ImageDecodeError("too_large", "out of memory decoding the image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as e:
        raise _load_error(e) from None


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block must not cost a good picture
        return 1
    return value if isinstance(value, int) else 1


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → "L" or "RGB"; greyscale stays one channel until after the resize."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode in _UINT16_MODES or mode == "I":
        # Pillow's own I;16/I → L conversion clips at 255, turning a 16-bit picture white.
        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    # RGBA/RGBa/RGBX (alpha dropped), P/PA (palette looked up, transparency ignored, as Keras
    # does), CMYK (Pillow undoes Adobe's inversion when reading), YCbCr, LAB, HSV.
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageDecodeError(
            "unsupported_format", f"cannot convert a {img.format} image in mode {mode} to RGB: {e}"
        ) from None


def _load_error(e: BaseException) -> ImageDecodeError:
    message = str(e) or type(e).__name__
    lowered = message.lower()
    # libjpeg says "Premature end of JPEG file" for a cut file, but "Corrupt JPEG data:
    # premature end of data segment" for damage inside it.
    if isinstance(e, EOFError) or "truncated" in lowered or "premature end of jpeg" in lowered:
        return ImageDecodeError("truncated", f"image data is truncated: {message}")
    if "not available" in lowered or ("unsupported" in lowered and "marker" not in lowered):
        return ImageDecodeError("unsupported_format", f"cannot decode this variant: {message}")
    return ImageDecodeError("corrupt", f"image data is corrupt: {message}")


_TEXT_HINTS = (
    (re.compile(rb"^\s*<!doctype\s+html|^\s*<html|<head\b|<body\b", re.I), "HTML (an error page?)"),
    (re.compile(rb"^\s*<\?xml[^>]*>\s*<error", re.I), "an XML error document from a storage API"),
    (re.compile(rb"^\s*<\?xml", re.I), "XML"),
    (re.compile(rb"^\s*[\[{]"), "JSON"),
)
_BINARY_HINTS = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"%PDF", "a PDF document"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself"),
)


def _unidentified(data: bytes) -> ImageDecodeError:
    """Pillow knows no format for these bytes: say what they look like instead."""
    head = bytes(data[:512]).lstrip(b"\xef\xbb\xbf")
    reason, what = "not_an_image", None
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            reason, what = "corrupt", f"starts like a {fmt} but its header is unreadable"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
        reason, what = "unsupported_format", "HEIC/HEIF is not supported: convert it to JPEG"
    elif re.match(rb"^\s*(<\?xml[^>]*>\s*)?<svg", head, re.I):
        reason, what = "unsupported_format", "SVG is a vector format: render it to PNG first"
    if what is None:
        for magic, kind in _BINARY_HINTS:
            if head.startswith(magic):
                what = f"not an image: looks like {kind}"
                break
    if what is None:
        for pattern, kind in _TEXT_HINTS:
            if pattern.search(head):
                what = f"not an image: looks like {kind}"
                break
    if what is None and head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]):
        snippet = head[:40].decode("ascii").strip().replace("\n", " ")
        what = f"not an image: looks like text ({snippet!r})"
    if what is None:
        what = f"not an image: unrecognised format (first bytes {data[:8].hex(' ')})"
    return ImageDecodeError(reason, what)
