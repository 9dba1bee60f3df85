"""The best epoch's weights by validation accuracy, kept beside the checkpoints for --keep best.

best = BestWeights(f"{checkpoint_dir}/best", storage=storage, writer=is_chief)
best.offer(epoch=3, val_accuracy=0.91, model=model)     # kept if better than any before
best.restore_into(model)                                 # before the export
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from trainer.data import storage as storage_lib
from trainer.data.storage import Storage
from trainer.errors import StorageNotFoundError

logger = logging.getLogger(__name__)

WEIGHTS = "weights.npz"
RECORD = "best.json"  # written after the weights: it names the epoch they belong to


class BestWeights:
    def __init__(self, directory: str, *, storage: Storage, writer: bool) -> None:
        self.directory, self.storage, self.writer = directory, storage, writer
        self.epoch: int | None = None
        self.val_accuracy = -1.0
        try:
            record = json.loads(self.storage.read(storage_lib.join(directory, RECORD)))
            self.epoch, self.val_accuracy = record["epoch"], record["val_accuracy"]
        except (StorageNotFoundError, ValueError, KeyError):
            pass

    def offer(self, *, epoch: int, val_accuracy: float, model: Any) -> bool:
        """Keeps `model`'s weights when `val_accuracy` beats every earlier epoch's."""
        if val_accuracy <= self.val_accuracy:
            return False
        self.epoch, self.val_accuracy = epoch, val_accuracy
        if self.writer:
            buffer = io.BytesIO()
            np.savez(buffer, *[np.asarray(w) for w in model.get_weights()])
            self.storage.write(storage_lib.join(self.directory, WEIGHTS), buffer.getvalue())
            record = {"epoch": epoch, "val_accuracy": val_accuracy}
            self.storage.write(
                storage_lib.join(self.directory, RECORD), json.dumps(record).encode()
            )
        return True

    def restore_into(self, model: Any) -> int | None:
        """Loads the kept weights into `model`; returns their epoch (None: nothing kept)."""
        if self.epoch is None:
            return None
        data = self.storage.read(storage_lib.join(self.directory, WEIGHTS))
        with np.load(io.BytesIO(data)) as arrays:
            model.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
        logger.info(
            "exporting the best epoch's weights: epoch %d, val_accuracy %.4f",
            self.epoch,
            self.val_accuracy,
        )
        return self.epoch
