"""The end of a run: weights digest, export, metrics.json, labels, the quality gate, _SUCCESS.

Only the chief writes; every worker logs its weights digest, which replicas that stayed in
sync share. The gate is judged on the exported model (the float32 clone of the kept epoch's
weights) over the whole validation split, on the chief; a failed gate still writes every
output but BLESSED, then exits 3. Other workers end with 0: the chief's exit code is the job's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trainer.data.counters import Counters
from trainer.distribute.strategy import StrategySetup
from trainer.errors import QualityGateError
from trainer.export.evaluate import evaluate_exported
from trainer.export.outputs import Outputs
from trainer.export.serving import ExportSpec, export_model
from trainer.model.trainable import Trainable
from trainer.train import metrics
from trainer.train.confusion import confusion_png
from trainer.train.hooks import Hooks
from trainer.train.inputs import Inputs

logger = logging.getLogger(__name__)


def finish(
    config: Any,
    *,
    setup: StrategySetup,
    inputs: Inputs,
    trainable: Trainable,
    result: dict[str, Any],
    outputs: Outputs,
    counters: Counters,
    hooks: Hooks,
) -> int:
    """Writes the outputs (chief only) and judges the gate; returns 0 or raises."""
    cluster, history = setup.cluster, result["history"]
    weights_sha256 = metrics.weights_digest(trainable.model)
    logger.info("final weights sha256 %s (worker %d)", weights_sha256, cluster.task_index)
    kept = history[-1]["epoch"] if history else None
    if cluster.is_chief and config.keep == "best" and result.get("best") is not None:
        kept = result["best"].restore_into(trainable.model) or kept
    record = next((h for h in history if h["epoch"] == kept), history[-1] if history else {})
    final = {k: v for k, v in record.items() if k.startswith("val_") and k != "val_confusion"}
    if not cluster.is_chief:
        logger.info(
            "worker %d done; the chief writes the outputs and judges the quality gate",
            cluster.task_index,
        )
        return 0
    data = inputs.data
    exported = export_model(
        trainable.model,
        spec=ExportSpec(
            architecture=config.model,
            class_names=tuple(data.index.class_names),
            image_size=tuple(config.image_size),
            input_dtype=config.dtype,
            resize=getattr(config, "resize", "squash"),
            pretrained=getattr(config, "weights", "none") != "none",
        ),
        outputs=outputs,
        hooks=hooks,
    )
    judged = evaluate_exported(
        exported.model,
        data.val,
        config=config,
        storage=inputs.train_seq.storage,
        batch_size=inputs.per_replica,
        cache=inputs.val_seq.cache if inputs.val_seq is not None else None,
    )
    gate = metrics.Gate(config.min_val_accuracy, judged.get("val_accuracy"))
    gate_record = {**gate.to_dict(), "judged_on": "exported model"}
    summary = {
        "history": history,
        "final": final,
        "kept": {"keep": config.keep, "epoch": kept},
        "val_confusion": record.get("val_confusion"),
        "replicas_in_sync": result.get("replicas_in_sync"),
        "exported": {**exported.summary(), "epoch": kept, **judged},
        "quality_gate": {**gate_record, "passed": gate.passed},
        "images_per_s": metrics.mean_of(history, "images_per_s"),
        "data_wait_fraction": metrics.mean_of(history, "data_wait_fraction"),
        "replicas": setup.replicas,
        "workers": cluster.num_workers,
        "global_batch": config.batch_size,
        "per_replica_batch": inputs.per_replica,
        "steps": result["step"],
        "class_names": list(data.index.class_names),
        "dataset": {
            "fingerprint": data.index.fingerprint(),
            "objects": len(data.index),
            "train": len(data.train),
            "validation": len(data.val),
        },
        "dtype_policy": trainable.policy,
        "counters": counters.snapshot(),
        "weights_sha256": weights_sha256,
        "quarantined": inputs.quarantined,
        "config": config.to_dict(),
    }
    if config.trace_steps:
        summary["trace"] = result["trace"]
    written = dict(exported.uris)
    written["labels"] = outputs.write_labels(data.index.class_names)
    if record.get("val_confusion"):
        png = confusion_png(np.asarray(record["val_confusion"]), data.index.class_names)
        written["confusion_matrix"] = outputs.write_bytes("confusion_matrix.png", png)
    written["metrics"] = outputs.write_json("metrics.json", summary)
    written["tensorboard"] = config.tensorboard_dir or outputs.uri("tensorboard")
    outputs.finish(blessed=gate.passed, gate=gate_record)
    logger.info("outputs: %s", ", ".join(f"{k}={v}" for k, v in written.items()))
    logger.info("%s written last", outputs.uri("_SUCCESS"))
    accuracy = judged.get("val_accuracy", float("nan"))
    if config.min_val_accuracy is None:
        logger.info(
            "no quality gate (--min-val-accuracy); BLESSED not written (exported model: "
            "val_accuracy %.4f)",
            accuracy,
        )
    elif not gate.passed:
        raise QualityGateError(
            f"--min-val-accuracy {config.min_val_accuracy}: validation accuracy "
            f"{accuracy:.4f} of the exported model is below the gate; outputs written "
            "without BLESSED"
        )
    else:
        logger.info(
            "quality gate on the exported model: val_accuracy %.4f >= %.4f (epoch %s, %d "
            "validation samples)",
            accuracy,
            config.min_val_accuracy,
            kept,
            judged["val_samples"],
        )
    return 0
