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
from trainer.train.best import BestWeights
from trainer.train.checkpoint import Checkpointer
from trainer.train.feed import Feed
from trainer.train.hooks import Hooks
from trainer.train.inputs import Inputs
from trainer.train.preemption import StopFlag
from trainer.train.resume import patience_ran_out, resume
from trainer.train.step import CompiledSteps, compile_steps, step_options
from trainer.train.telemetry import Telemetry, start_telemetry
from trainer.train.watchdog import start_watchdog

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
        self.feed = Feed(
            setup, image_size=tuple(config.image_size), dtype=config.dtype, hooks=hooks
        )
        self.trace: list[list[Any]] = []
        self.telemetry: Telemetry | None = None
        self.watchdog = start_watchdog(
            config, self.feed, multi_worker=setup.cluster.is_multi_worker
        )
        # Per epoch, which training samples this worker fed: summed over workers at its end.
        self.fed: dict[int, np.ndarray] = {}
        self.best = BestWeights(
            f"{config.checkpoint_dir.rstrip('/')}/best",
            storage=storage,
            writer=setup.cluster.is_chief,
        )

    def run(self, stop: StopFlag) -> dict[str, Any]:
        """`train`, with TensorFlow's errors turned into the user's own."""
        import tensorflow as tf

        try:
            return self.train(stop)
        except tf.errors.OpError as e:
            failures.translate(e, cluster=self.setup.cluster, input_error=self.feed.input_error)
            raise
        finally:
            self.feed.close()
            self.watchdog.close()
            if self.telemetry is not None:
                self.telemetry.close()

    def compile_for(self, epoch: int) -> CompiledSteps:
        """The compiled steps for `epoch`'s phase (backbone frozen or not)."""
        self.trainable.enter_phase(epoch)
        if self.trainable.freeze_epochs:
            logger.info(
                "epoch %d: backbone %s",
                epoch + 1,
                "frozen, training the head" if self.trainable.frozen_in(epoch) else "trainable",
            )
        return compile_steps(
            self.setup.strategy,
            self.trainable.model,
            self.trainable.optimizer,
            self.trainable.stop_votes,
            local_replicas=self.setup.local_replicas,
            options=step_options(
                self.config, self.inputs.data, gpus=self.setup.gpus, hooks=self.hooks
            ),
        )

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
        plan = plan_key(config, self.setup, self.inputs, trainable, self.steps_per_epoch)
        step, history, totals, self.trace = resume(
            checkpointer, self.trainable, plan=plan, steps_per_epoch=self.steps_per_epoch
        )
        steps_fn = self.compile_for(step // self.steps_per_epoch)
        board = None
        if cluster.is_chief:
            board = metrics.TensorBoard(config.tensorboard_dir, storage=self.storage)
        iterator = iter(
            self.feed.training(
                self.inputs.train_seq, start_step=step, total_steps=self.total_steps, fed=self.fed
            )
        )
        self.telemetry = telemetry = start_telemetry(
            self.config, self.counters, cluster, total_steps=self.total_steps, step=step
        )
        window, epoch_meter = metrics.Meter(self.counters), metrics.Meter(self.counters)
        window_start, progbar, stopped_early = (
            step,
            None,
            patience_ran_out(history, self.config.early_stopping_patience),
        )
        while step < self.total_steps and not stopped_early:
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
            chunk, digests = steps_fn.train_chunk(
                iterator, tf.constant(steps), tf.constant(step, tf.int64)
            )
            chunk = chunk.numpy()
            step += steps
            self.watchdog.mark("step", step=step)
            for _ in range(steps):
                self.hooks.reached("step")
            if telemetry is not None:
                telemetry.steps_done(step=step, epoch=epoch, samples=chunk[2], steps=steps)
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
                    global_step=step,
                    total_steps=self.total_steps,
                    window_steps=step - window_start,
                )
                window.mark()
                window_start = step
            terminating = chunk[4] > 0
            if index == self.steps_per_epoch:
                history.append(self.end_epoch(epoch, totals, epoch_meter, steps_fn, board))
                metrics.keep_confusions(history)
                self.hooks.reached("epoch_end")
                totals[:] = 0
                progbar = None
                epoch_meter.mark()
                stopped_early = patience_ran_out(history, self.config.early_stopping_patience)
                if step < self.total_steps and trainable.frozen_in(epoch) != trainable.frozen_in(
                    epoch + 1
                ):
                    steps_fn = self.compile_for(epoch + 1)
            if (
                terminating
                or step % config.checkpoint_every == 0
                or index == self.steps_per_epoch
                or step == self.total_steps
            ):
                self.watchdog.mark("checkpoint", step=step)
                checkpointer.save(
                    step,
                    model=trainable.model,
                    optimizer=trainable.optimizer,
                    state=checkpoint_state(
                        step,
                        steps_per_epoch=self.steps_per_epoch,
                        history=history,
                        totals=totals,
                        plan=plan,
                        trace=self.trace if config.trace_steps else None,
                    ),
                )
                self.watchdog.mark("step", step=step)
            if terminating:
                raise TerminatedError(
                    f"stopped by {stop.signal_name or 'a peer worker'} at step {step} "
                    f"(epoch {step // self.steps_per_epoch + 1}); checkpoint written, restart "
                    "the job to resume"
                )
        return {
            "history": history,
            "step": step,
            "trace": self.trace,
            "best": self.best,
            "replicas_in_sync": metrics.replicas_in_sync(trainable.model, self.setup.strategy),
        }

    def evaluate(self, steps_fn: CompiledSteps) -> dict[str, Any]:
        """Validation figures over every validation object, once."""
        val_seq = self.inputs.val_seq
        if val_seq is None:
            return {}
        import tensorflow as tf

        self.hooks.reached("eval")
        self.watchdog.mark("evaluation")
        iterator = self.feed.validation(val_seq)
        totals, confusion = steps_fn.eval_all(iterator, tf.constant(len(val_seq)))
        self.watchdog.mark("step")
        val_seq.release_buffers()  # not held through the training between evaluations
        return metrics.validation_record(
            totals.numpy(), confusion.numpy(), self.inputs.data.index.class_names
        )

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
        if "val_accuracy" in record and self.best.offer(
            epoch=epoch + 1, val_accuracy=record["val_accuracy"], model=self.trainable.model
        ):
            record["best"] = True
        if board is not None:
            board.write(
                epoch=epoch + 1, record=record, class_names=self.inputs.data.index.class_names
            )
        return record


def checkpoint_state(
    step: int,
    *,
    steps_per_epoch: int,
    history: list,
    totals: np.ndarray,
    plan: dict[str, Any],
    trace: list | None,
) -> dict[str, Any]:
    """What a checkpoint keeps beside the weights: position, history, the epoch's totals."""
    epoch, index = divmod(step, steps_per_epoch)
    state = {
        "epoch": epoch,
        "batch": index,
        "plan": plan,
        "history": history,
        "epoch_totals": totals.tolist(),
    }
    if trace is not None:
        state["trace"] = trace
    return state


def plan_key(
    config: Any, setup: StrategySetup, inputs: Inputs, trainable: Trainable, steps_per_epoch: int
) -> dict[str, Any]:
    """What the data order depends on, and the dtype policy the optimizer state is for."""
    return {
        "seed": config.seed,
        "batch": config.batch_size,
        "workers": setup.cluster.num_workers,
        "replicas": setup.replicas,
        "steps_per_epoch": steps_per_epoch,
        "remainder": config.remainder,
        "index": inputs.data.index.fingerprint(),
        "policy": trainable.policy,
    }
