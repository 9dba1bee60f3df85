"""The confusion matrix as figures (per-class precision and recall) and as a PNG picture."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

CELL = 28  # pixels per cell; labels and counts are drawn up to MAX_LABELLED classes
MAX_LABELLED = 40
MARGIN = 110


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
    """A PNG of the row-normalised matrix: true class down, predicted class across."""
    from PIL import Image, ImageDraw

    k = len(class_names)
    labelled = k <= MAX_LABELLED
    margin = MARGIN if labelled else 10
    size = margin + k * CELL + 10
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    for i in range(k):
        for j in range(k):
            shade = int(255 * (1 - share[i, j]))
            x0, y0 = margin + j * CELL, margin + i * CELL
            draw.rectangle(
                [x0, y0, x0 + CELL - 1, y0 + CELL - 1], fill=(shade, shade, 255), outline="#ddd"
            )
            if labelled and confusion[i, j]:
                colour = "white" if share[i, j] > 0.5 else "black"
                draw.text((x0 + 3, y0 + 8), f"{int(confusion[i, j])}", fill=colour)
    if labelled:
        for k_, name in enumerate(class_names):
            draw.text((4, margin + k_ * CELL + 8), name[:16], fill="black")
            draw.text((margin + k_ * CELL + 2, margin - 14 - 12 * (k_ % 2)), name[:4], fill="black")
        draw.text((4, 4), "rows: true class, columns: predicted", fill="black")
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
