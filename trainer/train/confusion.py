"""The confusion matrix as figures (per-class precision and recall) and as a PNG picture."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

CELL = 28  # pixels per cell; labels and counts are drawn up to MAX_LABELLED classes
MAX_LABELLED = 40
MAX_NAME = 32  # characters of a class name drawn; longer ones end in "…"
FONT_SIZE = 13


def per_class(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall and support per class; rows are true classes, columns predictions."""
    true = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    out = {}
    for k, name in enumerate(class_names):
        out[name] = {
            "precision": float(hits[k] / predicted[k]) if predicted[k] else None,
            "recall": float(hits[k] / true[k]) if true[k] else None,
            "support": int(true[k]),
        }
    return out


def confusion_png(confusion: np.ndarray, class_names: Sequence[str]) -> bytes:
    """A PNG of the row-normalised matrix: true class down, predicted class across; class
    names written in full (up to MAX_NAME characters) beside the rows and up the columns."""
    from PIL import Image, ImageDraw

    k = len(class_names)
    labelled = k <= MAX_LABELLED
    font = _font()
    names = [label(name) for name in class_names]
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    longest = max((measure.textlength(n, font=font) for n in names), default=0)
    margin = int(longest) + 12 if labelled else 10
    top = margin + 20 if labelled else 10
    img = Image.new("RGB", (margin + k * CELL + 10, top + k * CELL + 10), "white")
    draw = ImageDraw.Draw(img)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    for i in range(k):
        for j in range(k):
            shade = int(255 * (1 - share[i, j]))
            x0, y0 = margin + j * CELL, top + i * CELL
            draw.rectangle(
                [x0, y0, x0 + CELL - 1, y0 + CELL - 1], fill=(shade, shade, 255), outline="#ddd"
            )
            if labelled and confusion[i, j]:
                colour = "white" if share[i, j] > 0.5 else "black"
                draw.text((x0 + 3, y0 + 7), f"{int(confusion[i, j])}", fill=colour, font=font)
    if labelled:
        for i, name in enumerate(names):
            draw.text((4, top + i * CELL + 7), name, fill="black", font=font)
            # Column names read upwards, each in its own column: none cut short, none overlapping.
            width = int(measure.textlength(name, font=font)) + 2
            tag = Image.new("RGB", (width, CELL - 6), "white")
            ImageDraw.Draw(tag).text((0, 2), name, fill="black", font=font)
            tag = tag.rotate(90, expand=True)
            img.paste(tag, (margin + i * CELL + 3, top - 4 - tag.height))
        draw.text((4, 4), "rows: true class, columns: predicted", fill="black", font=font)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def label(name: str) -> str:
    """A class name as the picture writes it: whole up to MAX_NAME characters."""
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)  # FreeType: a readable size
    except (TypeError, OSError):  # a Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()
