"""The exported model: a float32 copy outside the strategy, as `model.keras` and a SavedModel.

    exported = export_model(trainable.model, spec=ExportSpec(...), outputs=outputs, hooks=hooks)
    exported.model          # the float32 clone (logits), what the gate evaluates
    exported.uris           # {"model": .../model.keras, "saved_model": .../saved_model/<v>}

The clone is built under the float32 dtype policy whatever policy training ran under (the
policy is Keras' global state: it is set for the clone's construction only and restored after),
so the SavedModel holds float32 variables and computes in float32. The SavedModel's signatures
are described in `trainer.export.signatures` and docs/serving.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from trainer.export.outputs import Outputs
from trainer.train.hooks import Hooks

logger = logging.getLogger(__name__)

SIGNATURES = ("serving_default", "serving_pixels")


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What the exported model is: architecture, classes, input size, dtype and resize mode."""

    architecture: str
    class_names: Sequence[str]
    image_size: tuple[int, int]
    input_dtype: str = "uint8"
    resize: str = "squash"
    pretrained: bool = False  # a pretrained backbone runs in inference mode in model.keras too


@dataclasses.dataclass
class Exported:
    model: Any  # the float32 clone, logits out
    uris: dict[str, str]
    version: int

    def summary(self) -> dict[str, Any]:
        """What metrics.json says about the export."""
        return {
            "saved_model": self.uris["saved_model"],
            "version": self.version,
            "model": self.uris["model"],
            "dtype": "float32",
            "signatures": list(SIGNATURES),
        }


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Keras' global dtype policy is float32 inside, and what it was again after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_clone(model: Any, spec: ExportSpec) -> Any:
    """A fresh float32 copy of `model` (built outside any strategy) with its weights."""
    from trainer.model.zoo import build_model

    with float32_policy():
        clone = build_model(
            spec.architecture,
            num_classes=len(spec.class_names),
            image_size=tuple(spec.image_size),
            input_dtype=spec.input_dtype,
            pretrained=spec.pretrained,
        )
    clone.set_weights(model.get_weights())
    return clone


def export_model(model: Any, *, spec: ExportSpec, outputs: Outputs, hooks: Hooks) -> Exported:
    """Writes model.keras, then saved_model/<version>/ (the weights `model` holds now)."""
    from trainer.export.signatures import serving_archive

    # Export must not see distributed variables, and the serving signature should not depend
    # on how training was spread.
    clone = float32_clone(model, spec)
    model_uri = outputs.save_keras(clone)
    hooks.reached("export")
    archive = serving_archive(
        clone,
        class_names=spec.class_names,
        image_size=spec.image_size,
        resize=spec.resize,
        input_dtype=spec.input_dtype,
    )
    version = outputs.next_version()
    saved_uri = outputs.export_saved_model(archive, version=version)
    logger.info(
        "SavedModel version %d (float32; signatures %s) at %s",
        version,
        ", ".join(SIGNATURES),
        saved_uri,
    )
    return Exported(clone, {"model": model_uri, "saved_model": saved_uri}, version)
