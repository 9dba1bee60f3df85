"""The serving signatures: encoded image bytes or uint8 pixels in, scores and a label out.

    archive = serving_archive(clone, class_names=["cat", "dog"], image_size=(224, 224),
                              resize="squash", input_dtype="uint8")
    archive.write_out("/tmp/saved_model/1764640000")

`serving_default` takes `image_bytes` (tf.string [None]: JPEG, PNG, GIF, BMP, WebP) and decodes
inside the graph the way `trainer.data.decode.decode_image` does in training:

- JPEG is decoded DCT-scaled to the size libjpeg-turbo picks in training (the smallest M/8
  that keeps what the resize mode needs). `tf.io.decode_jpeg(ratio=)` (accurate integer IDCT,
  as simplejpeg's default) scales by 1/1, 1/2, 1/4, 1/8 only, so for 3/8, 5/8, 3/4, 7/8 the
  graph decodes at the next power of two up and area-averages down to the same size: the
  pixels differ by a few levels, not the picture, and the crop and pad boxes are the same.
- The resize is the decoder's: area averaging when an axis shrinks 2x or more (OpenCV's
  INTER_AREA), bilinear with half-pixel centres otherwise (INTER_LINEAR), rounded to uint8.
- `resize` squash / crop / pad with the decoder's arithmetic (the same rounding of the crop box
  and of the padded size, the same centring).
- Greyscale and palette images become RGB, alpha is dropped (not composited), like Pillow's
  `convert("RGB")`; 16-bit PNG is cut to 8 bits by libpng (the decoder rounds: at most 1 level).
- A JPEG's EXIF orientation is read from its bytes in the graph (TensorFlow's decoder ignores
  it) and applied after the resize, as the decoder does.
- The decoder's pixel limit (a decompression bomb fails the request before decoding).
- Not done here: a PNG's eXIf orientation; TIFF; WebP's size is not checked before decoding.

`serving_pixels` takes `pixels` (uint8 [None, H, W, 3]) already decoded and resized. Both
return `scores` (float32 [None, classes], the softmax of the logits) and `label` (tf.string
[None], the top-1 class name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

JPEG_RATIOS = (8, 4, 2, 1)  # tried from the smallest decode up
SCALE_METHOD = "area"  # M/8 DCT scaling, approximated from the next power of two
MAX_PIXELS = 89_478_485  # trainer.data.decode's default limit
EXIF_SCAN_BYTES = 1 << 17  # the EXIF block is in the first APP1 segment, at most 64 KiB long


def decode_image_tf(data: Any, *, size: tuple[int, int], resize: str = "squash") -> Any:
    """One encoded image (a scalar tf.string) → uint8 [H, W, 3], as `decode_image` does."""
    import tensorflow as tf

    th, tw = (int(v) for v in size)
    is_jpeg = tf.io.is_jpeg(data)
    orientation = tf.cond(is_jpeg, lambda: jpeg_orientation(data), lambda: tf.constant(1, tf.int32))

    def upright(swapped: bool) -> Any:
        # As the decoder: fit to the stored orientation (the target transposed when the
        # picture lies on its side), then turn the small result upright.
        w, h = (th, tw) if swapped else (tw, th)
        pixels = tf.cond(
            is_jpeg,
            lambda: _decode_jpeg(data, w, h, resize),
            lambda: _decode_other(data),
        )
        fitted = _fit(tf.ensure_shape(pixels, [None, None, 3]), w, h, resize)
        return _orient(fitted, orientation, swapped=swapped)

    swaps = tf.logical_and(orientation >= 5, orientation <= 8)
    return tf.ensure_shape(
        tf.cond(swaps, lambda: upright(True), lambda: upright(False)), [th, tw, 3]
    )


def _decode_jpeg(data: Any, tw: int, th: int, resize: str) -> Any:
    import tensorflow as tf

    shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
    h, w = shape[0], shape[1]
    check = _pixel_limit(w, h)
    mw, mh = _min_decode_size(w, h, tw, th, resize)
    # libjpeg-turbo's choice in training: the smallest M/8 keeping (mw, mh).
    m = tf.constant(8, tf.int64)
    for k in range(7, 0, -1):
        fits = tf.logical_and(-(-w * k // 8) >= mw, -(-h * k // 8) >= mh)
        m = tf.where(fits, tf.constant(k, tf.int64), m)
    # ...or whole, under twice the size needed (decode._whole_is_cheaper).
    m = tf.where(tf.logical_and(w < 2 * mw, h < 2 * mh), tf.constant(8, tf.int64), m)
    sw, sh = -(-w * m // 8), -(-h * m // 8)
    # TensorFlow scales by 1/1, 1/2, 1/4 or 1/8 only: the nearest at least as large...
    branch = tf.constant(len(JPEG_RATIOS) - 1, tf.int32)
    for i in reversed(range(len(JPEG_RATIOS) - 1)):
        branch = tf.where(8 // JPEG_RATIOS[i] >= m, tf.constant(i, tf.int32), branch)

    def decoder(ratio: int) -> Any:
        return lambda: tf.io.decode_jpeg(
            data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE"
        )

    with tf.control_dependencies([check]):
        pixels = tf.switch_case(branch, [decoder(r) for r in JPEG_RATIOS])
    # ...then area-averaged down to the size libjpeg-turbo's M/8 scaling gives.
    return _resize(pixels, sw, sh, method=SCALE_METHOD)


def _decode_other(data: Any) -> Any:
    """PNG, GIF, BMP (the size from the header checked against the pixel limit first), WebP."""
    import tensorflow as tf

    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 0, 32), tf.uint8), tf.int64)
    raw = tf.pad(raw, [[0, 32 - tf.size(raw)]])

    def number(start: int, length: int, *, big: bool) -> Any:
        places = [256**i for i in range(length)]
        weights = tf.constant(places[::-1] if big else places, tf.int64)
        return tf.reduce_sum(raw[start : start + length] * weights)

    def starts(magic: bytes) -> Any:
        return tf.reduce_all(raw[: len(magic)] == tf.constant(list(magic), tf.int64))

    png, gif, bmp = starts(b"\x89PNG\r\n\x1a\n"), starts(b"GIF8"), starts(b"BM")
    bmp_h = number(22, 4, big=False)
    w = tf.where(
        png,
        number(16, 4, big=True),
        tf.where(gif, number(6, 2, big=False), tf.where(bmp, number(18, 4, big=False), 0)),
    )
    h = tf.where(
        png,
        number(20, 4, big=True),
        # BMP heights are signed: negative for a top-down bitmap.
        tf.where(
            gif,
            number(8, 2, big=False),
            tf.where(bmp, tf.abs(tf.where(bmp_h >= 2**31, bmp_h - 2**32, bmp_h)), 0),
        ),
    )
    with tf.control_dependencies([_pixel_limit(w, h)]):
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def _pixel_limit(w: Any, h: Any) -> Any:
    """The decoder's decompression-bomb limit, before any pixel is decoded."""
    import tensorflow as tf

    return tf.debugging.assert_less_equal(
        w * h,
        tf.constant(MAX_PIXELS, tf.int64),
        message=f"image_bytes: an image over {MAX_PIXELS} pixels (a decompression bomb?); "
        "send it smaller",
    )


def jpeg_orientation(data: Any) -> Any:
    """The EXIF orientation (1..8; 1 when absent or unreadable) of a JPEG, as an int32 scalar.

    The decoder's walk: the leading APPn/COM segments up to the first APP1 "Exif", then the
    TIFF header's byte order and IFD0's 0x0112 entry. Only the first 128 KiB are read.
    """
    import tensorflow as tf

    head = tf.io.decode_raw(tf.strings.substr(data, 0, EXIF_SCAN_BYTES), tf.uint8)
    size = tf.size(head, out_type=tf.int64)
    raw = tf.cast(tf.pad(head, [[0, 16]]), tf.int64)  # reads past the end see zeros

    def at(pos: Any) -> Any:
        return tf.gather(raw, tf.clip_by_value(pos, 0, size + 15))

    exif = tf.constant(list(b"Exif\x00\x00"), tf.int64)

    def walk(pos: Any, tiff: Any) -> tuple[Any, Any]:
        marker = at(pos + 1)
        is_exif = tf.logical_and(
            tf.equal(marker, 0xE1), tf.reduce_all(at(pos + 4 + tf.range(6, dtype=tf.int64)) == exif)
        )
        is_app = tf.logical_or(tf.logical_and(marker >= 0xE0, marker <= 0xEF), marker == 0xFE)
        step = 2 + at(pos + 2) * 256 + at(pos + 3)
        stop = tf.constant(-2, tf.int64)
        tiff = tf.where(is_exif, pos + 10, tf.where(is_app, tiff, stop))
        return pos + step, tiff

    def more(pos: Any, tiff: Any) -> Any:
        return tf.logical_and(
            tf.equal(tiff, -1), tf.logical_and(pos + 10 <= size, tf.equal(at(pos), 0xFF))
        )

    _, tiff = tf.while_loop(
        more,
        walk,
        (tf.constant(2, tf.int64), tf.constant(-1, tf.int64)),
        maximum_iterations=64,
    )
    little = tf.logical_and(tf.equal(at(tiff), 0x49), tf.equal(at(tiff + 1), 0x49))

    def u16(pos: Any) -> Any:
        return tf.where(little, at(pos) + 256 * at(pos + 1), 256 * at(pos) + at(pos + 1))

    def u32(pos: Any) -> Any:
        return tf.where(little, u16(pos) + 65536 * u16(pos + 2), 65536 * u16(pos) + u16(pos + 2))

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(tf.minimum(u16(ifd), 512), dtype=tf.int64)
    match = tf.logical_and(tf.equal(u16(entries), 0x0112), tf.equal(u16(entries + 2), 3))
    # A sentinel last, so that an empty IFD or no 0x0112 entry reads as 1.
    match = tf.concat([match, [True]], 0)
    values = tf.concat([u16(entries + 8), tf.constant([1], tf.int64)], 0)
    value = tf.gather(values, tf.argmax(tf.cast(match, tf.int32)))
    value = tf.where(tiff >= 0, value, 1)
    return tf.cast(tf.where(tf.logical_and(value >= 1, value <= 8), value, 1), tf.int32)


def _orient(pixels: Any, orientation: Any, *, swapped: bool) -> Any:
    """decode._TRANSPOSE: the EXIF orientation applied to [h, w, 3]."""
    import tensorflow as tf

    def transposed(a: Any) -> Any:
        return tf.transpose(a, [1, 0, 2])

    if swapped:  # 5..8
        branches = [
            lambda: transposed(pixels),  # 5 TRANSPOSE
            lambda: tf.reverse(transposed(pixels), [1]),  # 6 ROTATE_270
            lambda: tf.reverse(transposed(pixels), [0, 1]),  # 7 TRANSVERSE
            lambda: transposed(tf.reverse(pixels, [1])),  # 8 ROTATE_90
        ]
        return tf.switch_case(tf.clip_by_value(orientation - 5, 0, 3), branches)
    branches = [
        lambda: pixels,  # 1 upright
        lambda: tf.reverse(pixels, [1]),  # 2 FLIP_LEFT_RIGHT
        lambda: tf.reverse(pixels, [0, 1]),  # 3 ROTATE_180
        lambda: tf.reverse(pixels, [0]),  # 4 FLIP_TOP_BOTTOM
    ]
    return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 3), branches)


def _min_decode_size(w: Any, h: Any, tw: int, th: int, resize: str) -> tuple[Any, Any]:
    """decode._min_decode_size on int64 tensors."""
    import tensorflow as tf

    if resize != "pad":
        return tf.constant(tw, tf.int64), tf.constant(th, tf.int64)
    width_limits = tw * h <= th * w
    fw = tf.where(width_limits, tf.constant(tw, tf.int64), -(-w * th // h))
    fh = tf.where(width_limits, -(-h * tw // w), tf.constant(th, tf.int64))
    one = tf.constant(1, tf.int64)
    return tf.maximum(one, tf.minimum(w, fw)), tf.maximum(one, tf.minimum(h, fh))


def _fit(pixels: Any, tw: int, th: int, resize: str) -> Any:
    """decode._fit: uint8 [h, w, 3] → [th, tw, 3] by `resize`, the same box arithmetic."""
    import tensorflow as tf

    shape = tf.shape(pixels, out_type=tf.int64)
    h, w = shape[0], shape[1]
    wf, hf = tf.cast(w, tf.float64), tf.cast(h, tf.float64)
    one = tf.constant(1, tf.int64)
    if resize == "crop":
        scale = tf.maximum(tw / wf, th / hf)
        cw = tf.minimum(w, tf.maximum(one, _round(tw / scale)))
        ch = tf.minimum(h, tf.maximum(one, _round(th / scale)))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return _resize(pixels[y0 : y0 + ch, x0 : x0 + cw], tw, th)
    if resize == "pad":
        scale = tf.minimum(tw / wf, th / hf)
        rw = tf.minimum(tf.constant(tw, tf.int64), tf.maximum(one, _round(wf * scale)))
        rh = tf.minimum(tf.constant(th, tf.int64), tf.maximum(one, _round(hf * scale)))
        inner = _resize(pixels, rw, rh)
        x0, y0 = (tw - rw) // 2, (th - rh) // 2
        return tf.pad(inner, [[y0, th - rh - y0], [x0, tw - rw - x0], [0, 0]])
    return _resize(pixels, tw, th)


def _round(x: Any) -> Any:
    import tensorflow as tf

    return tf.cast(tf.round(x), tf.int64)  # half to even, as Python's round()


def _resize(pixels: Any, tw: Any, th: Any, method: str | None = None) -> Any:
    """decode._resize: area when an axis shrinks 2x or more, else bilinear; uint8 out."""
    import tensorflow as tf

    shape = tf.shape(pixels, out_type=tf.int64)
    h, w = shape[0], shape[1]
    tw, th = tf.cast(tw, tf.int64), tf.cast(th, tf.int64)
    target = tf.cast(tf.stack([th, tw]), tf.int32)
    same = tf.logical_and(tf.equal(w, tw), tf.equal(h, th))
    shrink = tf.logical_and(
        tf.logical_or(w >= 2 * tw, h >= 2 * th), tf.logical_and(w >= tw, h >= th)
    )

    def resized(method: str) -> Any:
        out = tf.image.resize(pixels, target, method=method)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    return tf.cond(
        same,
        lambda: pixels,
        lambda: (
            resized(method)
            if method
            else tf.cond(shrink, lambda: resized("area"), lambda: resized("bilinear"))
        ),
    )


def serving_archive(
    model: Any,
    *,
    class_names: Sequence[str],
    image_size: tuple[int, int],
    resize: str,
    input_dtype: str,
) -> Any:
    """A `keras.export.ExportArchive` of `model` with the two signatures above."""
    import keras
    import tensorflow as tf

    height, width = (int(v) for v in image_size)
    labels = list(class_names)
    if int(model.output_shape[-1]) != len(labels):
        raise ValueError(
            f"the model has {model.output_shape[-1]} outputs but {len(labels)} class names"
        )

    def predict(pixels: Any) -> dict[str, Any]:
        x = pixels if input_dtype == "uint8" else tf.cast(pixels, tf.float32) / 255.0
        logits = tf.cast(model(x, training=False), tf.float32)
        scores = tf.nn.softmax(logits, axis=-1)
        top = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {"scores": scores, "label": tf.gather(tf.constant(labels), top)}

    def from_bytes(image_bytes: Any) -> dict[str, Any]:
        pixels = tf.map_fn(
            lambda b: decode_image_tf(b, size=(height, width), resize=resize),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8),
        )
        return predict(pixels)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        from_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "serving_pixels",
        predict,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="pixels")],
    )
    return archive
