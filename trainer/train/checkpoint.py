"""Step-level checkpoints, local or on GCS, committed atomically.

A checkpoint is a folder ``ckpt-<step>/`` holding ``weights.npz`` (model and optimizer
variables) and ``state.json`` (epoch, step, data-order position, history: plain data), and a
``COMMITTED`` marker written last that records both files' sha256. Object stores have no atomic
folder rename, so the marker is the commit: a folder without a valid marker (a job killed during
the write) is never resumed from, and is cleaned up by the next save.

    ckpt = Checkpointer(f"{output}/checkpoints", storage=storage, keep=3, writer=is_chief)
    restored = ckpt.restore(model=model, optimizer=optimizer)   # None on a fresh start
    ...
    ckpt.save(step, model=model, optimizer=optimizer, state={"epoch": 2, "batch": 17})
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from trainer.data import storage as storage_lib
from trainer.data.storage import Storage
from trainer.errors import ConfigError, StorageNotFoundError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"ckpt-(\d{9})$")
WEIGHTS = "weights.npz"
STATE = "state.json"
COMMITTED = "COMMITTED"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _variables(model: Any, optimizer: Any) -> list[Any]:
    # Order is stable for a given architecture and optimizer: that is what makes it restorable.
    return [*model.variables, *optimizer.variables]


class Checkpointer:
    def __init__(
        self,
        directory: str,
        *,
        storage: Storage,
        keep: int = 3,
        writer: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        # Listings of a local folder are absolute paths: a relative --output must match them.
        self.directory = (
            directory.rstrip("/") if storage_lib.is_gcs(directory) else os.path.abspath(directory)
        )
        self.storage = storage
        self.keep = keep
        self.writer = writer
        self.last_saved_step: int | None = None
        # Called between the data files and the COMMITTED marker (fault injection).
        self.before_commit = before_commit

    def _path(self, step: int, name: str = "") -> str:
        folder = storage_lib.join(self.directory, f"ckpt-{step:09d}")
        return storage_lib.join(folder, name) if name else folder

    def _steps(self) -> tuple[list[int], list[int]]:
        """(committed steps, uncommitted steps), ascending."""
        folders: dict[int, set[str]] = {}
        try:
            listing = self.storage.list(self.directory)
        except StorageNotFoundError:  # a local folder not created yet: no checkpoints
            listing = []
        for uri in listing:
            parts = uri[len(self.directory) :].strip("/").split("/")
            match = _NAME.match(parts[0])
            if match and len(parts) == 2:
                folders.setdefault(int(match.group(1)), set()).add(parts[1])
        committed = sorted(s for s, files in folders.items() if COMMITTED in files)
        partial = sorted(s for s, files in folders.items() if COMMITTED not in files)
        return committed, partial

    def latest_step(self) -> int | None:
        committed, _ = self._steps()
        return committed[-1] if committed else None

    def save(self, step: int, *, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
        """Writes checkpoint `step` (the writer only; other workers return at once)."""
        if self.last_saved_step == step:
            return
        self.last_saved_step = step
        if not self.writer:
            return
        buffer = io.BytesIO()
        arrays = {
            f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(_variables(model, optimizer))
        }
        np.savez(buffer, **arrays)
        weights = buffer.getvalue()
        state_bytes = json.dumps({**state, "step": step}, indent=1).encode()
        self.storage.write(self._path(step, WEIGHTS), weights)
        self.storage.write(self._path(step, STATE), state_bytes)
        if self.before_commit is not None:
            self.before_commit()
        marker = {"step": step, WEIGHTS: _sha256(weights), STATE: _sha256(state_bytes)}
        self.storage.write(self._path(step, COMMITTED), json.dumps(marker).encode())
        logger.info("checkpoint %s written (%s)", self._path(step), _position(step, state))
        self._prune(step)

    def _prune(self, newest: int) -> None:
        committed, partial = self._steps()
        stale = [s for s in committed[: -self.keep]] + [s for s in partial if s < newest]
        for step in stale:
            for name in (COMMITTED, STATE, WEIGHTS):  # marker first: never a valid half
                self.storage.delete(self._path(step, name))
            if not storage_lib.is_gcs(self.directory):
                with contextlib.suppress(OSError):
                    os.rmdir(self._path(step))

    def restore(
        self,
        *,
        model: Any,
        optimizer: Any,
        keep_optimizer: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """Loads the newest complete checkpoint into `model`/`optimizer`; returns its state.

        When `keep_optimizer(state)` is false (the checkpoint was trained another way, e.g.
        under another dtype policy), only the model's weights are loaded and the optimizer
        starts afresh.
        """
        committed, _ = self._steps()
        for step in reversed(committed):
            try:
                marker = json.loads(self.storage.read(self._path(step, COMMITTED)))
                weights = self.storage.read(self._path(step, WEIGHTS))
                state_bytes = self.storage.read(self._path(step, STATE))
                if marker.get(WEIGHTS) != _sha256(weights) or marker.get(STATE) != _sha256(
                    state_bytes
                ):
                    raise ValueError("checksum mismatch")
                state = json.loads(state_bytes)
                with np.load(io.BytesIO(weights)) as data:
                    arrays = [data[k] for k in sorted(data.files)]
            except (ValueError, OSError) as e:
                logger.warning(
                    "checkpoint %s is damaged (%s); trying an older one", self._path(step), e
                )
                continue
            variables = _variables(model, optimizer)
            if keep_optimizer is not None and not keep_optimizer(state):
                variables = list(model.variables)
                arrays = arrays[: len(variables)]
            if len(arrays) != len(variables) or any(
                tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables, strict=True)
            ):
                raise ConfigError(
                    f"{self._path(step)}: checkpoint does not match this model (another --model, "
                    "image size or class list?); use a new --output or delete the checkpoints"
                )
            for variable, value in zip(variables, arrays, strict=True):
                variable.assign(value)
            self.last_saved_step = step
            return state
        return None


def _position(step: int, state: dict) -> str:
    """Where a checkpoint stands, counted as the progress lines count: epoch 1 is the first,
    and a checkpoint at an epoch's end is that epoch's last step, not the next one's first."""
    per_epoch = (state.get("plan") or {}).get("steps_per_epoch")
    if not per_epoch:
        return f"step {step}"
    epoch, batch = divmod(step, per_epoch)
    if batch == 0 and epoch > 0:
        epoch, batch = epoch - 1, per_epoch
    return f"epoch {epoch + 1}, step {batch}/{per_epoch}"
