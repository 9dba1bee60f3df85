"""The confusion-matrix picture writes class names whole (up to 32 characters), beside the rows
and up the columns: names that differ only in their 20th character make different pictures."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from trainer.train.confusion import MAX_NAME, confusion_png, label

MATRIX = np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]])


def _picture(names):
    return Image.open(io.BytesIO(confusion_png(MATRIX, names)))


def test_names_of_twenty_characters_are_drawn_whole():
    base = ["class_with_name_of_a", "second_class_name__b", "third"]
    changed = [base[0], base[1][:-1] + "z", base[2]]  # only the 20th character differs
    a, b = _picture(base), _picture(changed)
    assert a.size != b.size or np.asarray(a).tobytes() != np.asarray(b).tobytes()
    short = _picture(["a", "b", "c"])
    assert a.size[0] > short.size[0] + 60 and a.size[1] > short.size[1] + 60


def test_only_names_past_the_limit_are_shortened():
    assert label("x" * MAX_NAME) == "x" * MAX_NAME
    assert label("y" * (MAX_NAME + 5)) == "y" * (MAX_NAME - 1) + "…"
