"""How a pack sizes its images, and whether that suits the training size.

scale = sizing_scale(1200, 1600, max_side=0, short_side=256)   # 0.2133...
advice = size_advice(packed.settings, image_size=(224, 224))    # None, or a sentence
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def sizing_scale(height: int, width: int, *, max_side: int, short_side: int) -> float:
    """The scale (at most 1) that brings the longer side to `max_side` and the shorter one to
    `short_side`, each when set; the smaller one when both are."""
    scales = [1.0]
    if max_side and max(height, width) > max_side:
        scales.append(max_side / max(height, width))
    if short_side and min(height, width) > short_side:
        scales.append(short_side / min(height, width))
    return min(scales)


def size_advice(settings: Mapping[str, object], *, image_size: tuple[int, int]) -> str | None:
    """A warning when the pack's images are much smaller or larger than training needs."""
    need = max(image_size)
    suggest = math.ceil(need * 8 / 7 / 8) * 8  # 256 for 224: room for a crop, DCT 7/8
    short, longest = int(settings.get("short_side") or 0), int(settings.get("max_side") or 0)
    side, flag = (short, "--short-side") if short else (longest, "--max-side")
    if not side:
        return None  # original sizes: unknown without reading them
    if side < need:
        return (
            f"the pack was made with {flag} {side}, smaller than --image-size {need}: images "
            f"are upscaled and detail is lost; re-pack with --short-side {suggest}"
        )
    if side > 2 * need:
        return (
            f"the pack was made with {flag} {side}, over twice --image-size {need}: every image "
            f"decodes up to {(side / suggest) ** 2:.0f}x the pixels training needs; re-pack with "
            f"--short-side {suggest} to decode faster"
        )
    return None
