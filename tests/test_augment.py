"""augment(): a pure function of its seed tensor, so a resumed run redraws the same images
(the end-to-end resume with --augment strong is a `full` test in test_training_options)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("level", ["basic", "strong"])
def test_the_same_seed_redraws_the_same_augmentation_and_keeps_dtype_and_range(level, dtype):
    import tensorflow as tf

    from trainer.train.augment import augment

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    images = tf.constant(pixels if dtype == "uint8" else pixels / np.float32(255))
    top = 255 if dtype == "uint8" else 1.0

    def draw(step: int, replica: int = 0) -> np.ndarray:
        seed = tf.constant([7, step * 1024 + replica], tf.int64)
        return augment(images, seed=seed, level=level).numpy()

    first = draw(5)
    assert first.dtype == np.dtype(dtype) and first.shape == pixels.shape
    assert first.min() >= 0 and first.max() <= top
    np.testing.assert_array_equal(draw(5), first)  # resumed at step 5: the same images
    assert not np.array_equal(draw(6), first), "another step draws anew"
    assert not np.array_equal(draw(5, replica=1), first), "another replica draws anew"
    assert not np.array_equal(first, images.numpy()), "something was changed"
    assert augment(images, seed=tf.constant([7, 0], tf.int64), level="none") is images


def test_every_level_is_described_for_the_log():
    from trainer.train.augment import LEVELS, describe

    said = {level: describe(level) for level in LEVELS}
    assert said["none"] == "none"
    assert said["basic"].startswith("basic: random resized crop (35%-100%")
    assert "rotation up to 10 degrees" in said["strong"] and "rotation" not in said["basic"]
