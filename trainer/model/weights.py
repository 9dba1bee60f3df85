"""Weights from elsewhere: a pretrained backbone (--weights), a previous model (--init-weights).

with tempfile.TemporaryDirectory() as tmp:
    source = fetch_backbone("gs://b/backbones/effnet.weights.h5", storage=storage, tmp=tmp)
    model = build_model(..., weights=source.for_builder)
    source.copy_into(model)                 # a .keras model's backbone layer, if that
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any

from trainer.data.storage import Storage
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackboneSource:
    """Where the backbone's weights come from, ready for `build_model(weights=...)`."""

    uri: str  # "none", "imagenet" or the file's URI
    local_path: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.uri != "none"

    @property
    def for_builder(self) -> str | None:
        """What keras.applications takes: None, "imagenet" or a local .h5 file."""
        if self.uri == "none":
            return None
        if self.uri == "imagenet":
            return "imagenet"
        return None if self.uri.endswith(".keras") else self.local_path

    def copy_into(self, model: Any) -> None:
        """For a .keras source, copies its `backbone` layer's weights into `model`'s."""
        if not (self.local_path and self.uri.endswith(".keras")):
            return
        import keras

        from trainer.model.zoo import BACKBONE

        source = keras.models.load_model(self.local_path, compile=False)
        try:
            weights = source.get_layer(BACKBONE).get_weights()
            model.get_layer(BACKBONE).set_weights(weights)
        except ValueError as e:
            raise ConfigError(
                f"--weights {self.uri}: its backbone does not fit this --model and --image-size "
                f"({str(e).splitlines()[0][:160]}); use a model.keras trained with the same ones"
            ) from None
        logger.info("backbone weights copied from %s", self.uri)


def fetch_backbone(uri: str, *, storage: Storage, tmp: str) -> BackboneSource:
    """`--weights`: none, imagenet, or a file downloaded into `tmp` (the suffix kept)."""
    if uri in ("none", "imagenet"):
        return BackboneSource(uri)
    name = "backbone" + next(s for s in (".weights.h5", ".h5", ".keras") if uri.endswith(s))
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(storage.read(uri))
    return BackboneSource(uri, path)


def load_init_weights(model: Any, uri: str, *, storage: Storage, architecture: str) -> None:
    """Copies the weights at `uri` into `model`; a mismatched architecture is a ConfigError."""
    suffix = ".weights.h5" if uri.endswith(".weights.h5") else ".keras"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "init" + suffix)
        with open(path, "wb") as f:
            f.write(storage.read(uri))
        try:
            if suffix == ".keras":
                import keras

                source = keras.models.load_model(path, compile=False)
                model.set_weights(source.get_weights())
            else:
                model.load_weights(path)
        except (ValueError, OSError) as e:
            raise ConfigError(
                f"--init-weights {uri}: cannot load into {architecture} "
                f"({str(e).splitlines()[0][:160]})"
            ) from None
    logger.info("initial weights loaded from %s", uri)
