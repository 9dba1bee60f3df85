"""Whether the run in --output is already complete, read from its files before TF starts.

A run is complete when ``_SUCCESS`` is there (a run that trains again withdraws it first), its
``metrics.json`` counts as many steps as the newest checkpoint, and it trained every epoch of
--epochs or stopped early under --early-stopping-patience. Running it again then changes
nothing: no steps, no new ``saved_model/<version>``, no rewritten metrics.json. A higher
--epochs (or patience) continues it; another --min-val-accuracy exports it again to judge it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from trainer.data.storage import Storage
from trainer.errors import QualityGateError, StorageNotFoundError
from trainer.export.outputs import SUCCESS, Outputs
from trainer.train.checkpoint import Checkpointer
from trainer.train.resume import patience_ran_out

logger = logging.getLogger(__name__)


def _metrics(outputs: Outputs, storage: Storage) -> dict[str, Any] | None:
    if not storage.exists(outputs.uri(SUCCESS)):
        return None
    try:
        doc = json.loads(storage.read(outputs.uri("metrics.json")))
    except (StorageNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("history"), list) else None


def complete_run(
    config: Any, outputs: Outputs, storage: Storage, *, fingerprint: str
) -> str | None:
    """The line to log when --output holds this run complete; None when there is work left.

    Raises QualityGateError when the complete run failed the same --min-val-accuracy.
    """
    doc = _metrics(outputs, storage)
    if doc is None:
        return None
    latest = Checkpointer(config.checkpoint_dir, storage=storage, writer=False).latest_step()
    if latest is None or latest != doc.get("steps"):
        return None  # checkpoints moved or deleted: train as before
    history = doc["history"]
    trained = max((int(h.get("epoch", 0)) for h in history), default=0)
    stopped = trained < config.epochs and patience_ran_out(history, config.early_stopping_patience)
    if trained < config.epochs and not stopped:
        return None  # a higher --epochs: resume and train the rest
    gate = doc.get("quality_gate") or {}
    if gate.get("min_val_accuracy") != config.min_val_accuracy:
        logger.info(
            "the run in %s is complete but --min-val-accuracy changed (%s, now %s): "
            "exporting it again to judge the new gate",
            outputs.root,
            gate.get("min_val_accuracy"),
            config.min_val_accuracy,
        )
        return None
    trained_on = (doc.get("dataset") or {}).get("fingerprint")
    if trained_on and trained_on != fingerprint:
        logger.warning(
            "the run in %s was trained on another dataset (fingerprint %s, --data now has %s); "
            "use a new --output to train on this one",
            outputs.root,
            trained_on,
            fingerprint,
        )
    exported = doc.get("exported") or {}
    if config.min_val_accuracy is not None and gate.get("passed") is False:
        raise QualityGateError(
            f"--min-val-accuracy {config.min_val_accuracy}: the complete run in {outputs.root} "
            f"failed the gate (exported model: val_accuracy {gate.get('val_accuracy', 0):.4f}); "
            "nothing to do — raise --epochs to train further"
        )
    where = f"epoch {trained} of {config.epochs}"
    if trained > config.epochs:
        where = f"{trained} epochs trained, --epochs {config.epochs}"
    if stopped:
        where = f"stopped early at epoch {trained} of {config.epochs}"
    raise_what = "--epochs or --early-stopping-patience" if stopped else "--epochs"
    return (
        f"the run in {outputs.root} is complete ({where}, exported as saved_model/"
        f"{exported.get('version', '?')}); nothing to do — raise {raise_what} to train further"
    )
