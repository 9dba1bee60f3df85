"""Initial weights from a previous run: a `.keras` model or a `.weights.h5` file, local or gs://."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from trainer.data.storage import Storage
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)


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
