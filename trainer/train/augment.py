"""Random augmentation inside the compiled step, drawn from a seed tensor: (seed, step, replica).

TF's stateless image ops and `keras.ops.image.affine_transform` rather than Keras's random
layers: those draw from a SeedGenerator variable, which cannot hold a different state per
replica under MirroredStrategy, so a resumed run could not redraw the same augmentations.

    x = augment(x, seed=tf.stack([seed, step * 1024 + replica]), level="strong")
"""

from __future__ import annotations

import math
from typing import Any

LEVELS = ("none", "basic", "strong")
CROP_SCALE = (0.35, 1.0)  # fraction of the image area a random resized crop keeps
CROP_RATIO = (3 / 4, 4 / 3)
MAX_ROTATION = math.radians(10)
JITTER = 0.2  # brightness, contrast and saturation within 1 ± JITTER


def describe(level: str) -> str:
    """What `level` does, for the log."""
    crop = (
        f"random resized crop ({CROP_SCALE[0]:.0%}-{CROP_SCALE[1]:.0%} of the area, aspect "
        f"3/4-4/3), horizontal flip"
    )
    rotation = f"rotation up to {math.degrees(MAX_ROTATION):.0f} degrees"
    jitter = f"brightness, contrast and saturation within 1 +/- {JITTER:g}"
    return {
        "none": "none",
        "basic": f"basic: {crop}",
        "strong": f"strong: {crop}, {rotation}, {jitter}",
    }[level]


def augment(images: Any, *, seed: Any, level: str) -> Any:
    """`images` (n, H, W, 3) uint8 or float32, augmented; the same dtype and range come back."""
    import tensorflow as tf

    if level == "none":
        return images
    dtype = images.dtype
    x = tf.cast(images, tf.float32)
    n, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]

    def uniform(k: int, low: float, high: float) -> Any:
        sub = tf.random.experimental.stateless_fold_in(seed, k)
        return tf.random.stateless_uniform([n], sub, minval=low, maxval=high)

    # Random resized crop: a box of a random area and aspect ratio, resized to the full size.
    area = uniform(1, *CROP_SCALE)
    ratio = tf.exp(uniform(2, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
    box_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
    box_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
    top = uniform(3, 0.0, 1.0) * (1.0 - box_h)
    left = uniform(4, 0.0, 1.0) * (1.0 - box_w)
    boxes = tf.stack([top, left, top + box_h, left + box_w], axis=1)
    x = tf.image.crop_and_resize(x, boxes, tf.range(n), tf.stack([height, width]))
    flip = uniform(5, 0.0, 1.0) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if level == "strong":
        x = _rotate(x, uniform(6, -MAX_ROTATION, MAX_ROTATION))
        x = _jitter(
            x,
            uniform(7, 1 - JITTER, 1 + JITTER),
            uniform(8, 1 - JITTER, 1 + JITTER),
            uniform(9, 1 - JITTER, 1 + JITTER),
        )
    top_value = 255.0 if dtype == tf.uint8 else 1.0
    x = tf.clip_by_value(x, 0.0, top_value)
    return tf.cast(tf.round(x), dtype) if dtype == tf.uint8 else tf.cast(x, dtype)


def _rotate(x: Any, angle: Any) -> Any:
    import keras
    import tensorflow as tf

    height = tf.cast(tf.shape(x)[1], tf.float32)
    width = tf.cast(tf.shape(x)[2], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): about the centre.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a2 = cx - cos * cx + sin * cy
    b2 = cy - sin * cx - cos * cy
    zeros = tf.zeros_like(angle)
    transform = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    return keras.ops.image.affine_transform(
        x, transform, interpolation="bilinear", fill_mode="reflect"
    )


def _jitter(x: Any, brightness: Any, contrast: Any, saturation: Any) -> Any:
    import tensorflow as tf

    x = x * brightness[:, None, None, None]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * contrast[:, None, None, None] + mean
    grey = tf.reduce_mean(x, axis=3, keepdims=True)
    return (x - grey) * saturation[:, None, None, None] + grey
