"""The job's outputs under ``--output``, each appearing under its final name only when complete.

    outputs = Outputs("gs://bucket/runs/42", storage=storage)
    outputs.begin()                        # a rerun first withdraws the old _SUCCESS and BLESSED
    outputs.save_keras(model)              # model.keras
    outputs.export_saved_model(archive, version=outputs.next_version())  # saved_model/<v>/
    outputs.write_json("metrics.json", metrics)
    outputs.finish(blessed=True)           # BLESSED if the gate passed, then _SUCCESS, last

Single files are atomic on both backends (local temp file + rename; a GCS upload is only visible
once complete). A SavedModel is a folder: locally it is renamed into place; on GCS its
``saved_model.pb`` is uploaded after every other file, because serving systems (TF Serving,
Vertex AI) treat a folder as a model only once that file exists. ``saved_model/`` is a model
base path as TF Serving expects it: each run adds a numbered version folder (unix seconds, and
always above every version already there), so a server watching it loads the newest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from trainer.data import storage as storage_lib
from trainer.data.storage import Storage
from trainer.errors import StorageNotFoundError

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

    def next_version(self) -> int:
        """A SavedModel version above every one under ``saved_model/``: unix seconds, or more."""
        base = self.uri("saved_model")
        try:
            names = self.storage.list(base)
        except StorageNotFoundError:
            names = []
        taken = [
            int(part)
            for name in names
            if (part := name[len(base) :].lstrip("/").split("/")[0]).isdigit()
        ]
        return max([int(time.time()), *(v + 1 for v in taken)])

    def export_saved_model(self, archive: Any, *, version: int) -> str:
        """Writes `archive` (a keras.export.ExportArchive) as ``saved_model/<version>/``."""
        saved_uri = self.uri(f"saved_model/{version}")
        with tempfile.TemporaryDirectory(prefix="streamtrain-export-") as tmp:
            export_dir = os.path.join(tmp, str(version))
            archive.write_out(export_dir, verbose=False)
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
