"""The Python training loop: restore, compiled chunks of steps, evaluation, checkpoints, stop.

* the position in the data is the global step: `(epoch, batch) = divmod(step, steps_per_epoch)`,
  and the sample order is a pure function of it, so a checkpoint at any step resumes the exact
  order (`sampling.BatchPlan`);
* each chunk runs `steps_per_execution` compiled steps (trainer.train.step) over the feed
  (trainer.train.feed); it never crosses an epoch end or a checkpoint;
* SIGTERM sets a flag (trainer.train.preemption); the next chunk carries this worker's vote to
  every replica, all workers stop after the same step, the chief checkpoints, and the process
  exits 143.

    loop = TrainLoop(config, setup, inputs, trainable, storage, counters, hooks)
    result = loop.run(stop)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trainer.data.counters import Counters
from trainer.data.storage import Storage
from trainer.distribute.strategy import StrategySetup
from trainer.errors import TerminatedError
from trainer.logs import is_tty
from trainer.model.trainable import Trainable
from trainer.train import failures, metrics
from trainer.train.checkpoint import Checkpointer
from trainer.train.feed import Feed
from trainer.train.hooks import Hooks
from trainer.train.inputs import Inputs
from trainer.train.preemption import StopFlag
from trainer.train.step import CompiledSteps, compile_steps

logger = logging.getLogger(__name__)


class TrainLoop:
    """Restore, then steps until the last epoch or an agreed stop, checkpointing on the way."""

    def __init__(
        self,
        config: Any,
        setup: StrategySetup,
        inputs: Inputs,
        trainable: Trainable,
        storage: Storage,
        counters: Counters,
        hooks: Hooks,
    ) -> None:
        self.config, self.setup, self.inputs, self.trainable = config, setup, inputs, trainable
        self.storage, self.counters, self.hooks = storage, counters, hooks
        self.steps_per_epoch = inputs.steps_per_epoch
        self.total_steps = self.steps_per_epoch * config.epochs
        self.feed = Feed(setup, image_size=tuple(config.image_size), dtype=config.dtype)
        self.trace: list[list[Any]] = []
        # Per epoch, which training samples this worker fed: summed over workers at its end.
        self.fed: dict[int, np.ndarray] = {}

    def run(self, stop: StopFlag) -> dict[str, Any]:
        """`train`, with TensorFlow's errors turned into the user's own."""
        import tensorflow as tf

        try:
            return self.train(stop)
        except tf.errors.OpError as e:
            failures.translate(e, cluster=self.setup.cluster, input_error=self.feed.input_error)
            raise

    def plan_key(self) -> dict[str, Any]:
        """What the data order depends on: a checkpoint from another plan restarts its epoch."""
        return {
            "seed": self.config.seed,
            "batch": self.config.batch_size,
            "workers": self.setup.cluster.num_workers,
            "replicas": self.setup.replicas,
            "steps_per_epoch": self.steps_per_epoch,
            "remainder": self.config.remainder,
            "index": self.inputs.data.index.fingerprint(),
        }

    def restore(self, checkpointer: Checkpointer) -> tuple[int, list[dict[str, Any]], np.ndarray]:
        """(step, history, this epoch's totals so far) from the last committed checkpoint."""
        model, optimizer = self.trainable.model, self.trainable.optimizer
        state = checkpointer.restore(model=model, optimizer=optimizer) or {}
        step = int(state.get("step", 0))
        history: list[dict[str, Any]] = state.get("history", [])
        totals = np.asarray(state.get("epoch_totals", [0.0, 0.0, 0.0]), dtype=np.float64)
        self.trace = state.get("trace", [])
        if state and state.get("plan") != self.plan_key():
            # Another batch size, seed or worker count: the old order cannot be continued.
            logger.warning(
                "checkpoint was written with another data plan (%s); keeping its "
                "weights and restarting epoch %d from its first batch",
                state.get("plan"),
                step // self.steps_per_epoch,
            )
            step = (step // self.steps_per_epoch) * self.steps_per_epoch
            totals[:] = 0
        if state:
            logger.info(
                "resumed from checkpoint at step %d: epoch %d, batch %d of %d",
                step,
                step // self.steps_per_epoch + 1,
                step % self.steps_per_epoch,
                self.steps_per_epoch,
            )
        return step, history, totals

    def train(self, stop: StopFlag) -> dict[str, Any]:
        import tensorflow as tf

        config, cluster, trainable = self.config, self.setup.cluster, self.trainable
        checkpointer = Checkpointer(
            config.checkpoint_dir,  # defaults to OUTPUT/checkpoints
            storage=self.storage,
            keep=config.keep_checkpoints,
            writer=cluster.is_chief,
            before_commit=lambda: self.hooks.reached("checkpoint_write"),
        )
        step, history, totals = self.restore(checkpointer)
        plan = self.plan_key()
        steps_fn = compile_steps(
            self.setup.strategy,
            trainable.model,
            trainable.optimizer,
            trainable.stop_votes,
            local_replicas=self.setup.local_replicas,
        )
        board = None
        if cluster.is_chief:
            board = metrics.TensorBoard(config.tensorboard_dir, storage=self.storage)
        iterator = iter(
            self.feed.training(
                self.inputs.train_seq, start_step=step, total_steps=self.total_steps, fed=self.fed
            )
        )
        window, epoch_meter = metrics.Meter(self.counters), metrics.Meter(self.counters)
        window_start, progbar = step, None
        while step < self.total_steps:
            epoch, index = divmod(step, self.steps_per_epoch)
            if is_tty() and progbar is None:
                import keras

                progbar = keras.utils.Progbar(self.steps_per_epoch, unit_name="step")
            if stop.is_set:
                trainable.stop_votes.assign(1.0)  # the chunk below carries the vote to all
            steps = min(
                config.steps_per_execution,
                self.steps_per_epoch - index,
                config.checkpoint_every - step % config.checkpoint_every,
            )
            chunk, digests = steps_fn.train_chunk(iterator, tf.constant(steps))
            chunk = chunk.numpy()
            step += steps
            for _ in range(steps):
                self.hooks.reached("step")
            totals += chunk[:3]
            window.add(chunk[2])
            epoch_meter.add(chunk[2])
            if config.trace_steps:
                self.trace.extend(
                    [step - steps + k, float(d)] for k, d in enumerate(digests.numpy())
                )
            index += steps
            if progbar is not None:
                progbar.update(
                    index, [("loss", totals[0] / totals[2]), ("accuracy", totals[1] / totals[2])]
                )
            elif step - window_start >= config.log_every or index == self.steps_per_epoch:
                metrics.log_progress(
                    epoch=epoch,
                    epochs=config.epochs,
                    index=index,
                    steps=self.steps_per_epoch,
                    totals=totals,
                    meter=window,
                )
                window.mark()
                window_start = step
            terminating = chunk[4] > 0
            if index == self.steps_per_epoch:
                history.append(self.end_epoch(epoch, totals, epoch_meter, steps_fn, board))
                self.hooks.reached("epoch_end")
                totals[:] = 0
                progbar = None
                epoch_meter.mark()
            if (
                terminating
                or step % config.checkpoint_every == 0
                or index == self.steps_per_epoch
                or step == self.total_steps
            ):
                checkpointer.save(
                    step,
                    model=trainable.model,
                    optimizer=trainable.optimizer,
                    state=self.state(step, history, totals, plan),
                )
            if terminating:
                raise TerminatedError(
                    f"stopped by {stop.signal_name or 'a peer worker'} at step {step} "
                    f"(epoch {step // self.steps_per_epoch + 1}); checkpoint written, restart "
                    "the job to resume"
                )
        return {"history": history, "step": step, "trace": self.trace}

    def evaluate(self, steps_fn: CompiledSteps) -> dict[str, float]:
        """Validation loss and accuracy over every validation object, once."""
        val_seq = self.inputs.val_seq
        if val_seq is None:
            return {}
        import tensorflow as tf

        self.hooks.reached("eval")
        iterator = iter(self.feed.validation(val_seq))
        loss, correct, count = steps_fn.eval_all(iterator, tf.constant(len(val_seq))).numpy()
        return {
            "val_loss": loss / count,
            "val_accuracy": correct / count,
            "val_samples": int(count),
        }

    def end_epoch(
        self,
        epoch: int,
        totals: np.ndarray,
        meter: metrics.Meter,
        steps_fn: CompiledSteps,
        board: metrics.TensorBoard | None,
    ) -> dict[str, Any]:
        import tensorflow as tf

        record = metrics.epoch_record(epoch, totals, meter)
        record.update(self.evaluate(steps_fn))
        cluster = self.setup.cluster
        mine = np.zeros(cluster.num_workers)
        mine[cluster.task_index] = self.fed.pop(epoch).sum()
        record["samples_fed_per_worker"] = [
            round(float(v)) for v in steps_fn.sum_over_workers(tf.constant(mine)).numpy()
        ]
        metrics.log_epoch(record, epochs=self.config.epochs)
        if board is not None:
            board.write(epoch=epoch + 1, record=record)
        return record

    def state(
        self, step: int, history: list, totals: np.ndarray, plan: dict[str, Any]
    ) -> dict[str, Any]:
        epoch, index = divmod(step, self.steps_per_epoch)
        state = {
            "epoch": epoch,
            "batch": index,
            "plan": plan,
            "history": history,
            "epoch_totals": totals.tolist(),
        }
        if self.config.trace_steps:
            state["trace"] = self.trace
        return state
