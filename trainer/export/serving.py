"""The exported model: a fresh copy outside the strategy, as `model.keras` and a SavedModel."""

from __future__ import annotations

from typing import Any

from trainer.export.outputs import Outputs
from trainer.train.hooks import Hooks


def export_model(
    model: Any,
    *,
    architecture: str,
    num_classes: int,
    image_size: tuple[int, int],
    input_dtype: str,
    outputs: Outputs,
    hooks: Hooks,
) -> dict[str, str]:
    """Writes model.keras, then saved_model/; returns their URIs by name."""
    from trainer.model.zoo import build_model

    # Export must not see distributed variables, and the serving signature should not depend
    # on how training was spread.
    clone = build_model(
        architecture, num_classes=num_classes, image_size=image_size, input_dtype=input_dtype
    )
    clone.set_weights(model.get_weights())
    model_uri = outputs.save_keras(clone)
    hooks.reached("export")
    return {"model": model_uri, "saved_model": outputs.export_saved_model(clone)}
