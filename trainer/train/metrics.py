"""What the run reports: progress lines, per-epoch records, TensorBoard scalars, the gate.

meter = Meter(counters)                  # throughput and data wait since the last mark
log_progress(epoch=0, epochs=3, index=10, steps=24, totals=acc, meter=meter,
             global_step=10, total_steps=72, window_steps=10)
board = TensorBoard(uri, storage=storage) if chief else None
board.write(epoch=1, record=record)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
import time
from typing import Any

import numpy as np

from trainer.data.counters import Counters
from trainer.data.storage import Storage

logger = logging.getLogger(__name__)

SCALARS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_top5_accuracy",
    "images_per_s",
    "data_wait_fraction",
)
TOP5_FROM = 6  # top-5 accuracy is reported when there are more than 5 classes


class Meter:
    """Images per second and the fraction of time spent waiting for data, since `mark()`."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.mark()

    def mark(self) -> None:
        self.started = time.perf_counter()
        self.wait = self.counters.get("wait_seconds")
        self.samples = 0.0

    def add(self, samples: float) -> None:
        self.samples += samples

    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def read(self) -> tuple[float, float]:
        """(images/s, data-wait fraction) since the mark."""
        elapsed = self.seconds()
        waited = self.counters.get("wait_seconds") - self.wait
        return self.samples / elapsed, min(1.0, waited / elapsed)


def log_progress(
    *,
    epoch: int,
    epochs: int,
    index: int,
    steps: int,
    totals: np.ndarray,
    meter: Meter,
    global_step: int,
    total_steps: int,
    window_steps: int,
) -> None:
    """One line per window: the epoch's running loss and accuracy, the window's throughput, and
    the time left at the window's step rate (`eta_s`, which the launcher prints)."""
    rate, wait = meter.read()
    loss, accuracy = totals[0] / max(totals[2], 1), totals[1] / max(totals[2], 1)
    eta = meter.seconds() / max(window_steps, 1) * max(total_steps - global_step, 0)
    fields = {"epoch": epoch + 1, "epochs": epochs, "step": index, "steps": steps, "loss": loss}
    fields |= {"accuracy": accuracy, "images_per_s": rate, "data_wait_fraction": wait}
    fields |= {"global_step": global_step, "total_steps": total_steps, "eta_s": eta}
    logger.info(
        "epoch %d/%d step %d/%d loss %.4f accuracy %.4f images/s %.1f data-wait %.0f%%",
        epoch + 1,
        epochs,
        index,
        steps,
        loss,
        accuracy,
        rate,
        100 * wait,
        extra={"fields": fields},
    )


def epoch_record(epoch: int, totals: np.ndarray, meter: Meter) -> dict[str, Any]:
    """The epoch's training figures; evaluation and per-worker counts are added by the loop."""
    rate, wait = meter.read()
    return {
        "epoch": epoch + 1,
        "loss": totals[0] / max(totals[2], 1),
        "accuracy": totals[1] / max(totals[2], 1),
        "samples": int(totals[2]),
        "images_per_s": rate,
        "data_wait_fraction": wait,
    }


def validation_record(
    totals: np.ndarray, confusion: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """val_loss, val_accuracy (and top-5), per-class precision and recall, the confusion matrix."""
    from trainer.train.confusion import per_class

    loss, correct, count, top5 = totals
    record: dict[str, Any] = {
        "val_loss": loss / count,
        "val_accuracy": correct / count,
        "val_samples": int(count),
    }
    if len(class_names) >= TOP5_FROM:
        record["val_top5_accuracy"] = top5 / count
    record["val_per_class"] = per_class(confusion, class_names)
    record["val_confusion"] = np.rint(confusion).astype(int).tolist()
    return record


def keep_confusions(history: list[dict[str, Any]]) -> None:
    """Drops the confusion matrix from every epoch record but the last and the best."""
    scores = [h.get("val_accuracy", -1.0) for h in history]
    keep = {len(history) - 1, int(np.argmax(scores))} if history else set()
    for i, record in enumerate(history):
        if i not in keep:
            record.pop("val_confusion", None)


def log_epoch(record: dict[str, Any], *, epochs: int) -> None:
    val = (
        f" val_loss {record['val_loss']:.4f} val_accuracy {record['val_accuracy']:.4f}"
        if "val_accuracy" in record
        else ""
    )
    logger.info(
        "epoch %d/%d done: loss %.4f accuracy %.4f%s, %.1f images/s",
        record["epoch"],
        epochs,
        record["loss"],
        record["accuracy"],
        val,
        record["images_per_s"],
        extra={
            "fields": {
                "epoch": record["epoch"],
                "epochs": epochs,
                **{k: record[k] for k in SCALARS if k in record},
            }
        },
    )


class TensorBoard:
    """Per-epoch scalars, written locally and uploaded to `uri` after every epoch: only this
    run's event file is written there, whatever else the folder holds is left as it is."""

    def __init__(self, uri: str, *, storage: Storage) -> None:
        import tensorflow as tf

        self.uri = uri
        self.storage = storage
        self.local_dir = tempfile.mkdtemp(prefix="streamtrain-tb-")
        self.writer = tf.summary.create_file_writer(self.local_dir)

    def write(
        self, *, epoch: int, record: dict[str, Any], class_names: list[str] | tuple[str, ...] = ()
    ) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # Raw summaries with the scalars plugin tag: TensorBoard reads them, and TensorFlow
        # needs no `tensorboard` package installed to write them.
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        ).SerializeToString()
        with self.writer.as_default(step=epoch):
            for key in SCALARS:
                if key in record:
                    tf.summary.write(key, tf.constant(record[key], tf.float32), metadata=metadata)
            if "val_confusion" in record and class_names:
                from trainer.train.confusion import confusion_png

                png = confusion_png(np.asarray(record["val_confusion"]), class_names)
                # The images plugin's layout: [width, height, encoded image...] as strings.
                image = tf.io.decode_png(png)
                shape = tf.shape(image)
                tensor = tf.stack(
                    [tf.strings.as_string(shape[1]), tf.strings.as_string(shape[0]), png]
                )
                images = summary_pb2.SummaryMetadata(
                    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
                ).SerializeToString()
                tf.summary.write("val_confusion_matrix", tensor, metadata=images)
        self.writer.flush()
        self.storage.upload_dir(self.local_dir, self.uri)


@dataclasses.dataclass(frozen=True)
class Gate:
    """The quality gate: passed when the final validation accuracy reaches the minimum."""

    min_val_accuracy: float | None
    val_accuracy: float | None

    @property
    def passed(self) -> bool:
        return self.min_val_accuracy is not None and (
            (self.val_accuracy if self.val_accuracy is not None else -1.0) >= self.min_val_accuracy
        )

    def to_dict(self) -> dict[str, Any]:
        return {"min_val_accuracy": self.min_val_accuracy, "val_accuracy": self.val_accuracy}


def weights_digest(model: Any) -> str:
    """sha256 over every weight: replicas and workers that stayed in sync agree on it."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def replicas_in_sync(model: Any, strategy: Any) -> bool:
    """Whether every local replica holds the same value of every model variable."""
    for variable in model.variables:
        values = [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
        if any(not np.array_equal(values[0], v) for v in values[1:]):
            return False
    return True


def mean_of(history: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([h[key] for h in history])) if history else 0.0
