"""The job's outputs under ``--output``, each appearing under its final name only when complete.

    outputs = Outputs("gs://bucket/runs/42", storage=storage)
    outputs.begin()                        # a rerun first withdraws the old _SUCCESS and BLESSED
    outputs.save_keras(model)              # model.keras
    outputs.export_saved_model(model)      # saved_model/
    outputs.write_json("metrics.json", metrics)
    outputs.finish(blessed=True)           # BLESSED if the gate passed, then _SUCCESS, last

Single files are atomic on both backends (local temp file + rename; a GCS upload is only visible
once complete). A SavedModel is a folder: locally it is renamed into place; on GCS its
``saved_model.pb`` is uploaded after every other file, because serving systems (TF Serving,
Vertex AI) treat a folder as a model only once that file exists.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from trainer.data import storage as storage_lib
from trainer.data.storage import Storage

logger = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
BLESSED = "BLESSED"


class Outputs:
    def __init__(self, root: str, *, storage: Storage) -> None:
        self.root = root.rstrip("/") if storage_lib.is_gcs(root) else os.path.abspath(root)
        self.storage = storage

    def uri(self, name: str) -> str:
        return storage_lib.join(self.root, name)

    def begin(self) -> None:
        for marker in (SUCCESS, BLESSED):
            self.storage.delete(self.uri(marker))

    def write_bytes(self, name: str, data: bytes) -> str:
        uri = self.uri(name)
        self.storage.write(uri, data)
        return uri

    def write_json(self, name: str, doc: Any) -> str:
        text = json.dumps(doc, indent=2, sort_keys=True, default=_plain)
        return self.write_bytes(name, (text + "\n").encode())

    def write_labels(self, class_names: Sequence[str]) -> str:
        return self.write_bytes("labels.txt", "".join(f"{c}\n" for c in class_names).encode())

    def save_keras(self, model: Any) -> str:
        """Writes ``model.keras``; returns its URI."""
        with tempfile.TemporaryDirectory(prefix="streamtrain-export-") as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            with open(path, "rb") as f:
                return self.write_bytes("model.keras", f.read())

    def export_saved_model(self, model: Any) -> str:
        """Writes the serving export ``saved_model/``; returns its URI."""
        saved_uri = self.uri("saved_model")
        with tempfile.TemporaryDirectory(prefix="streamtrain-export-") as tmp:
            export_dir = os.path.join(tmp, "saved_model")
            model.export(export_dir, format="tf_saved_model", verbose=False)
            if storage_lib.is_gcs(saved_uri):
                # saved_model.pb last: the folder is a model only once it exists.
                pb = os.path.join(tmp, "saved_model.pb")
                shutil.move(os.path.join(export_dir, "saved_model.pb"), pb)
                self.storage.upload_dir(export_dir, saved_uri)
                with open(pb, "rb") as f:
                    self.storage.write(storage_lib.join(saved_uri, "saved_model.pb"), f.read())
            else:
                self.storage.upload_dir(export_dir, saved_uri)
        return saved_uri

    def finish(self, *, blessed: bool, gate: dict[str, Any]) -> None:
        if blessed:
            self.write_json(BLESSED, gate)
        self.write_bytes(SUCCESS, b"")


def _plain(value: Any) -> Any:
    # numpy scalars and arrays (np.bool_, np.float32, ...) as their Python equivalents.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
