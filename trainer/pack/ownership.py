"""`trainer pack` writes into an --output it owns: one it marked, or one holding none of its names.

    claim_output("gs://b/packed", storage)   # before the first shard; ConfigError if foreign

The marker (``.streamtrain-pack``) is written before any shard, so a folder holding files under
pack's names (shards, sidecars, ``parts/``, index.json, quarantine.jsonl) but no marker holds
someone else's files, which packing would overwrite: it is refused (exit 2) naming one of them.
Other files in --output are never read, written or removed. The parts of an Indexed Job that
start together may each write the marker; it is the same empty-ish file.
"""

from __future__ import annotations

import os
import re

from trainer.data.gcs import is_gcs, join
from trainer.data.storage import Storage
from trainer.errors import ConfigError, StorageNotFoundError

MARKER = ".streamtrain-pack"
# What pack writes under --output (trainer.pack.format's layout), relative to it.
_PACK_NAMES = re.compile(
    r"(shard-\d{5}-\d{5}\.(tar|json)|parts/.*|index\.json|quarantine\.jsonl|_SUCCESS)"
)


def claim_output(output: str, storage: Storage) -> None:
    """Marks `output` as trainer pack's, or refuses one holding pack's names but no marker."""
    output = output.rstrip("/")
    marker = join(output, MARKER)
    if storage.exists(marker):
        return
    try:
        found = storage.list(output)
    except StorageNotFoundError:  # a local folder not there yet
        found = []
    root = output if is_gcs(output) else os.path.abspath(output)  # as list() spells them
    for uri in found:
        name = uri[len(root) :].lstrip("/")
        if _PACK_NAMES.fullmatch(name):
            raise ConfigError(
                f"--output {output}: {uri} was not written by trainer pack (the folder has no "
                f"{MARKER} file) and packing would overwrite it; choose an empty or new --output"
            )
    storage.write(marker, b"written by trainer pack: shards and index.json here are its own\n")
