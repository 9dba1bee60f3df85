"""One training path for every strategy: ImageSequence shards -> distributed step -> outputs.

Stock `model.fit` cannot train under MultiWorkerMirroredStrategy in Keras 3
(keras-team/keras#20585) and resumes only at epoch boundaries, so the loop is our own:

* each worker builds its `ImageSequence` shard inside `distribute_datasets_from_function`,
  batched per replica (the global batch divided by the replica count);
* a compiled step (`strategy.run` in a `tf.function`, `steps_per_execution` steps per call)
  computes the loss over the global batch and lets the Keras optimizer all-reduce gradients;
* the position in the data is the global step: `(epoch, batch) = divmod(step, steps_per_epoch)`,
  and the sample order is a pure function of it, so a checkpoint at any step resumes the exact
  order (`sampling.BatchPlan`);
* SIGTERM sets a flag; the step in flight finishes, every worker agrees to stop (a vote summed
  over all replicas, since TF swallows SIGTERM in multi-worker mode and a lone worker leaving a
  collective would hang the others), the chief checkpoints, and the process exits 143.

    exit_code = run(build_config(["--data", "gs://b/flowers", "--output", "gs://b/runs/1"]))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from trainer.data.cache import ByteCache
from trainer.data.counters import Counters
from trainer.data.index import load_or_discover
from trainer.data.storage import Storage
from trainer.distribute.strategy import StrategySetup, cluster_from_env, make_strategy
from trainer.errors import ConfigError, DataError, PeerLostError, QualityGateError, TerminatedError
from trainer.export.outputs import Outputs
from trainer.logs import is_tty
from trainer.train.checkpoint import Checkpointer
from trainer.train.hooks import Hooks, NoHooks

logger = logging.getLogger(__name__)


class _StopFlag:
    """Set by SIGTERM; read by the loop between steps."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            if self.event.is_set():
                return
            self.event.set()
            logger.warning(
                "%s received: finishing the step in flight, then checkpointing", self.signal_name
            )

        signal.signal(signal.SIGTERM, handler)


def _resolve_precision(mode: str, setup: StrategySetup) -> str | None:
    """Keras dtype policy name for --mixed-precision, or None for float32."""
    if mode == "off" or (mode == "auto" and not setup.gpus):
        return None
    if mode == "bf16":
        return "mixed_bfloat16"
    if mode == "fp16":
        return "mixed_float16"
    import tensorflow as tf

    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    major, _ = details.get("compute_capability", (0, 0))
    # bf16 needs Ampere (8.x) or newer; Volta/Turing get fp16 with loss scaling.
    if major >= 8:
        return "mixed_bfloat16"
    return "mixed_float16" if major >= 7 else None


def _split(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, parts: int):
    # Each Sequence batch is a multiple of the local replica count: equal chunks, one each.
    size = len(y) // parts
    for k in range(parts):
        piece = slice(k * size, (k + 1) * size)
        yield (x[piece], y[piece]) if w is None else (x[piece], y[piece], w[piece])


class _Run:
    """State of one training run; `run()` below is the entry point."""

    def __init__(self, config: Any, hooks: Hooks | None = None) -> None:
        self.config = config
        self.counters = Counters()
        self.stop = _StopFlag()
        self.storage = Storage(
            # The training and validation Sequences each run `fetch_threads` readers.
            concurrency=2 * (config.fetch_threads or 32),
            deadline_s=config.storage_deadline_s,
            request_timeout_s=config.request_timeout_s,
            counters=self.counters,
        )
        self.outputs = Outputs(config.output, storage=self.storage)
        self.hooks = hooks or NoHooks()
        # An exception raised inside the input generator reaches the step as a bare TF error;
        # the original is kept here so the user sees its own message and exit code.
        self.input_error: BaseException | None = None
        self.trace: list[list[Any]] = []

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        config = self.config
        cluster = cluster_from_env(
            os.environ,
            num_workers=config.num_workers,
            worker_service=config.worker_service,
            worker_port=config.worker_port,
            job_name=config.job_name,
        )
        self.index = load_or_discover(
            config.data,
            storage=self.storage,
            index_uri=config.index,
            class_names=config.classes.split(",") if config.classes else None,
        )
        self.train_index, self.val_index = self.index.split(
            val_split=config.val_split, seed=config.seed
        )
        if cluster.is_chief:
            self.storage.check_writable(self.outputs.root)
        # Keras (and so TensorFlow) loads only now: bad data fails above in a second.
        from trainer.data.sequence import ImageSequence

        self.setup_ = make_strategy(
            cluster=cluster,
            cpu_replicas=config.cpu_replicas,
            expect_gpus=config.expect_gpus,
            logical_gpus_per_gpu=config.logical_gpus_per_gpu,
            collective_timeout_s=config.collective_timeout_s,
        )
        setup = self.setup_
        self.stop.install()  # after the strategy: TF installs its own handler in multi-worker mode
        if config.batch_size % setup.replicas:
            raise ConfigError(
                f"--batch-size (TRAINER_BATCH_SIZE) {config.batch_size} is not a "
                f"multiple of the {setup.replicas} replicas; use a multiple"
            )
        self.per_replica = config.batch_size // setup.replicas
        self.local_batch = self.per_replica * setup.local_replicas
        shard = dict(shard_index=cluster.task_index, shard_count=cluster.num_workers)
        cache = None
        if config.cache_dir and config.cache_size_mb > 0:
            cache = ByteCache(config.cache_dir, max_bytes=config.cache_size_mb << 20)
        common = dict(
            image_size=tuple(config.image_size),
            storage=self.storage,
            dtype=config.dtype,
            replica_multiple=setup.local_replicas,
            seed=config.seed,
            on_corrupt=config.on_corrupt,
            fetch_threads=config.fetch_threads,
            decode_threads=config.decode_threads,
            prefetch_batches=config.prefetch_batches,
            cache=cache,
            counters=self.counters,
            quarantine_uri=self.outputs.uri(f"quarantine/worker-{cluster.task_index}.jsonl"),
            **shard,
        )
        try:
            self.train_seq = ImageSequence(
                self.train_index,
                batch_size=self.local_batch,
                remainder=config.remainder,
                shuffle=True,
                epochs=config.epochs,
                max_batches=config.max_steps_per_epoch,
                **common,
            )
            self.val_seq = None
            if len(self.val_index) >= cluster.num_workers:
                # Validation pads (weight 0) instead of dropping: every object is scored once.
                self.val_seq = ImageSequence(
                    self.val_index,
                    batch_size=self.local_batch,
                    remainder="pad",
                    shuffle=False,
                    epochs=1,
                    **common,
                )
        except ValueError as e:
            raise DataError(f"--data {config.data}: {e}") from None
        self.steps_per_epoch = len(self.train_seq)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.val_counted = np.zeros(len(self.val_index), dtype=bool)
        self._log_summary()

    def _log_summary(self) -> None:
        setup, config = self.setup_, self.config
        logger.info("devices: %s (GPUs: %d)", ", ".join(setup.devices), setup.gpus)
        logger.info(
            "strategy: %s, replicas %d, workers %d (this is worker %d%s)",
            setup.name,
            setup.replicas,
            setup.cluster.num_workers,
            setup.cluster.task_index,
            ", chief" if setup.cluster.is_chief else "",
        )
        logger.info(
            "dataset: %d objects (%d train, %d validation), %d classes: %s; fingerprint %s",
            len(self.index),
            len(self.train_index),
            len(self.val_index),
            self.index.num_classes,
            ", ".join(self.index.class_names[:20]),
            self.index.fingerprint(),
        )
        logger.info(
            "batch: global %d, per replica %d, per worker %d; %d steps per epoch, %d epochs",
            config.batch_size,
            self.per_replica,
            self.local_batch,
            self.steps_per_epoch,
            config.epochs,
        )

    def build(self) -> None:
        import keras
        import tensorflow as tf

        from trainer.model.zoo import build_model

        config, setup = self.config, self.setup_
        # TF's Python logger narrates every collective it builds; keep `kubectl logs` readable.
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        if config.deterministic:
            keras.utils.set_random_seed(config.seed)
            tf.config.experimental.enable_op_determinism()
        policy = _resolve_precision(config.mixed_precision, setup)
        if policy:
            keras.mixed_precision.set_dtype_policy(policy)
        self.policy = policy or "float32"
        lr = config.learning_rate * (setup.replicas if config.scale_lr else 1)
        with setup.strategy.scope():
            self.model = build_model(
                config.model,
                num_classes=self.index.num_classes,
                image_size=tuple(config.image_size),
                input_dtype=config.dtype,
            )
            if config.init_weights:
                self._load_init_weights()
            optimizer = keras.optimizers.Adam(learning_rate=lr)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
        # Outside the scope: a plain per-process variable, so each worker votes its own flag.
        self.stop_votes = tf.Variable(0.0, trainable=False, name="stop_vote")
        logger.info(
            "model %s: %d parameters, dtype policy %s, learning rate %g",
            config.model,
            self.model.count_params(),
            self.policy,
            lr,
        )

    def _load_init_weights(self) -> None:
        uri = self.config.init_weights
        suffix = ".weights.h5" if uri.endswith(".weights.h5") else ".keras"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "init" + suffix)
            with open(path, "wb") as f:
                f.write(self.storage.read(uri))
            try:
                if suffix == ".keras":
                    import keras

                    source = keras.models.load_model(path, compile=False)
                    self.model.set_weights(source.get_weights())
                else:
                    self.model.load_weights(path)
            except (ValueError, OSError) as e:
                raise ConfigError(
                    f"--init-weights {uri}: cannot load into {self.config.model} "
                    f"({str(e).splitlines()[0][:160]})"
                ) from None
        logger.info("initial weights loaded from %s", uri)

    # --- the compiled steps -------------------------------------------------------------------

    def _compile(self) -> None:
        import keras
        import tensorflow as tf

        strategy, model, optimizer = self.setup_.strategy, self.model, self.optimizer
        replicas = self.setup_.replicas
        stop_votes = self.stop_votes
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def train_step(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
                global_batch = tf.shape(y)[0] * replicas
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                to_grad = optimizer.scale_loss(loss) if scaled else loss
            grads = tape.gradient(to_grad, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            correct = tf.cast(tf.argmax(probs, axis=-1, output_type=tf.int32) == y, tf.float32)
            digest = (
                tf.reduce_sum(tf.cast(x, tf.float64)) + tf.reduce_sum(tf.cast(y, tf.float64)) * 1e9
            )
            return tf.stack(
                [
                    tf.reduce_sum(tf.cast(per_example, tf.float64)),
                    tf.reduce_sum(tf.cast(correct, tf.float64)),
                    tf.cast(tf.shape(y)[0], tf.float64),
                    digest,
                    tf.cast(stop_votes.read_value(), tf.float64),
                ]
            )

        @tf.function
        def train_chunk(iterator, steps):
            totals = tf.zeros([5], tf.float64)
            digests = tf.TensorArray(tf.float64, size=steps)
            for i in tf.range(steps):
                out = strategy.run(train_step, args=next(iterator))
                out = strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
                totals += out
                digests = digests.write(i, out[3])
            return totals, digests.stack()

        def eval_step(x, y, w):
            probs = model(x, training=False)
            per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
            correct = tf.cast(tf.argmax(probs, axis=-1, output_type=tf.int32) == y, tf.float64)
            w = tf.cast(w, tf.float64)
            return tf.stack(
                [
                    tf.reduce_sum(tf.cast(per_example, tf.float64) * w),
                    tf.reduce_sum(correct * w),
                    tf.reduce_sum(w),
                ]
            )

        @tf.function
        def evaluate(iterator, steps):
            totals = tf.zeros([3], tf.float64)
            for _ in tf.range(steps):
                out = strategy.run(eval_step, args=next(iterator))
                totals += strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)
            return totals

        @tf.function
        def gather(vector):
            # Each worker's vector, summed over all replicas: per-worker figures for the chief.
            out = strategy.run(lambda v: v / self.setup_.local_replicas, args=(vector,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

        self.train_chunk, self.evaluate_all, self.gather = train_chunk, evaluate, gather

    def _dataset(self, generator, with_weights: bool):
        import tensorflow as tf

        height, width = self.config.image_size
        spec = [
            tf.TensorSpec((None, height, width, 3), self.config.dtype),
            tf.TensorSpec((None,), tf.int32),
        ]
        if with_weights:
            spec.append(tf.TensorSpec((None,), tf.float32))

        def dataset_fn(context):
            if context.num_input_pipelines != self.setup_.cluster.num_workers:
                raise RuntimeError("one input pipeline per worker expected")
            return tf.data.Dataset.from_generator(
                lambda: self._keep_error(generator()), output_signature=tuple(spec)
            ).prefetch(2)

        return self.setup_.strategy.distribute_datasets_from_function(dataset_fn)

    def _keep_error(self, generator: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from generator
        except BaseException as e:
            self.input_error = e
            raise

    def _train_batches(self, start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        parts = self.setup_.local_replicas
        for step in range(start_step, self.total_steps):
            epoch, index = divmod(step, self.steps_per_epoch)
            x, y = self.train_seq.get_batch(epoch=epoch, index=index)
            # Keyed by epoch: this generator runs ahead of the step that consumes its output.
            seen = self.seen.setdefault(epoch, np.zeros(len(self.train_index), dtype=bool))
            seen[self.train_seq.positions(epoch=epoch, index=index)] = True
            yield from _split(x, y, None, parts)

    def _val_batches(self) -> Iterator[tuple[np.ndarray, ...]]:
        seq, parts = self.val_seq, self.setup_.local_replicas
        real = len(seq.plan.members)
        for index in range(len(seq)):
            x, y = seq.get_batch(epoch=0, index=index)
            start, stop = seq.plan.batch_bounds(index)
            w = (np.arange(start, stop) < real).astype(np.float32)  # 0 for pad repeats
            yield from _split(x, y, w, parts)

    # --- the loop -----------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        if self.val_seq is None:
            return {}
        import tensorflow as tf

        self.hooks.reached("eval")
        iterator = iter(self._dataset(self._val_batches, with_weights=True))
        totals = self.evaluate_all(iterator, tf.constant(len(self.val_seq))).numpy()
        loss, correct, count = totals
        return {
            "val_loss": loss / count,
            "val_accuracy": correct / count,
            "val_samples": int(count),
        }

    def train(self) -> dict[str, Any]:
        import tensorflow as tf

        config, setup = self.config, self.setup_
        cluster = setup.cluster
        ckpt_dir = config.checkpoint_dir or self.outputs.uri("checkpoints")
        self.checkpointer = Checkpointer(
            ckpt_dir,
            storage=self.storage,
            keep=config.keep_checkpoints,
            writer=cluster.is_chief,
            before_commit=lambda: self.hooks.reached("checkpoint_write"),
        )
        state = self.checkpointer.restore(model=self.model, optimizer=self.optimizer) or {}
        step = int(state.get("step", 0))
        history: list[dict[str, Any]] = state.get("history", [])
        acc = np.asarray(state.get("epoch_totals", [0.0, 0.0, 0.0]), dtype=np.float64)
        self.trace = state.get("trace", [])
        plan_key = self._plan_key()
        if state and state.get("plan") != plan_key:
            # Another batch size, seed or worker count: the old order cannot be continued.
            logger.warning(
                "checkpoint was written with another data plan (%s); keeping its "
                "weights and restarting epoch %d from its first batch",
                state.get("plan"),
                step // self.steps_per_epoch,
            )
            step = (step // self.steps_per_epoch) * self.steps_per_epoch
            acc[:] = 0
        if state:
            logger.info(
                "resumed from checkpoint at step %d: epoch %d, batch %d of %d",
                step,
                step // self.steps_per_epoch + 1,
                step % self.steps_per_epoch,
                self.steps_per_epoch,
            )
        if cluster.is_chief:
            self.outputs.begin()
        self._compile()
        self.seen: dict[int, np.ndarray] = {}
        tb_dir = tempfile.mkdtemp(prefix="streamtrain-tb-")
        writer = tf.summary.create_file_writer(tb_dir) if cluster.is_chief else None
        progbar = None
        iterator = iter(
            self._dataset(functools.partial(self._train_batches, step), with_weights=False)
        )
        window = {
            "t": time.perf_counter(),
            "wait": self.counters.get("wait_seconds"),
            "samples": 0.0,
            "step": step,
        }
        epoch_start = {
            "t": time.perf_counter(),
            "wait": self.counters.get("wait_seconds"),
            "samples": 0.0,
        }
        while step < self.total_steps:
            epoch, index = divmod(step, self.steps_per_epoch)
            if is_tty() and progbar is None:
                import keras

                progbar = keras.utils.Progbar(self.steps_per_epoch, unit_name="step")
            if self.stop.event.is_set():
                self.stop_votes.assign(1.0)  # the chunk below carries the vote to every worker
            steps = min(
                config.steps_per_execution,
                self.steps_per_epoch - index,
                config.checkpoint_every - step % config.checkpoint_every,
            )
            totals, digests = self.train_chunk(iterator, tf.constant(steps))
            totals = totals.numpy()
            step += steps
            for _ in range(steps):
                self.hooks.reached("step")
            acc += totals[:3]
            window["samples"] += totals[2]
            epoch_start["samples"] += totals[2]
            if config.trace_steps:
                self.trace.extend(
                    [step - steps + k, float(d)] for k, d in enumerate(digests.numpy())
                )
            index += steps
            if progbar is not None:
                progbar.update(index, [("loss", acc[0] / acc[2]), ("accuracy", acc[1] / acc[2])])
            elif step - window["step"] >= config.log_every or index == self.steps_per_epoch:
                self._log_window(epoch, index, acc, window, step)
            terminating = totals[4] > 0
            if index == self.steps_per_epoch:
                history.append(self._end_epoch(epoch, acc, epoch_start, writer, tb_dir))
                self.hooks.reached("epoch_end")
                acc[:] = 0
                progbar = None
                epoch_start = {
                    "t": time.perf_counter(),
                    "wait": self.counters.get("wait_seconds"),
                    "samples": 0.0,
                }
            if (
                terminating
                or step % config.checkpoint_every == 0
                or index == self.steps_per_epoch
                or step == self.total_steps
            ):
                self.checkpointer.save(
                    step,
                    model=self.model,
                    optimizer=self.optimizer,
                    state=self._state(step, history, acc, plan_key),
                )
            if terminating:
                raise TerminatedError(
                    f"stopped by {self.stop.signal_name or 'a peer worker'} at step {step} "
                    f"(epoch {step // self.steps_per_epoch + 1}); checkpoint written, restart "
                    "the job to resume"
                )
        return {"history": history, "tb_dir": tb_dir, "writer": writer, "step": step}

    def train_translating_errors(self) -> dict[str, Any]:
        """`train`, with TensorFlow's errors turned into the user's own."""
        import tensorflow as tf

        try:
            return self.train()
        except tf.errors.OpError as e:
            if self.input_error is not None:
                raise self.input_error from None
            lost = (
                tf.errors.UnavailableError,
                tf.errors.DeadlineExceededError,
                tf.errors.CancelledError,
                tf.errors.AbortedError,
            )
            if self.setup_.cluster.is_multi_worker and isinstance(e, lost):
                text = e.message or str(e)
                dead = sorted(set(re.findall(r"/job:worker/replica:\d+/task:(\d+)", text)))
                why = (
                    f"worker(s) {', '.join(dead)} stopped sending heartbeats"
                    if "heartbeat" in text and dead
                    else f"{type(e).__name__}: {text.strip().splitlines()[-1][:160]}"
                )
                raise PeerLostError(
                    f"worker {self.setup_.cluster.task_index}: lost contact with a peer ({why}); "
                    "restart the job, it resumes from the last checkpoint"
                ) from None
            raise

    def _plan_key(self) -> dict[str, Any]:
        return {
            "seed": self.config.seed,
            "batch": self.config.batch_size,
            "workers": self.setup_.cluster.num_workers,
            "replicas": self.setup_.replicas,
            "steps_per_epoch": self.steps_per_epoch,
            "remainder": self.config.remainder,
            "index": self.index.fingerprint(),
        }

    def _state(self, step: int, history: list, acc: np.ndarray, plan: dict) -> dict[str, Any]:
        epoch, index = divmod(step, self.steps_per_epoch)
        state = {
            "epoch": epoch,
            "batch": index,
            "plan": plan,
            "history": history,
            "epoch_totals": acc.tolist(),
        }
        if self.config.trace_steps:
            state["trace"] = self.trace
        return state

    def _log_window(self, epoch: int, index: int, acc: np.ndarray, window: dict, step: int) -> None:
        now = time.perf_counter()
        wait = self.counters.get("wait_seconds")
        elapsed = max(now - window["t"], 1e-9)
        logger.info(
            "epoch %d/%d step %d/%d loss %.4f accuracy %.4f images/s %.1f data-wait %.0f%%",
            epoch + 1,
            self.config.epochs,
            index,
            self.steps_per_epoch,
            acc[0] / max(acc[2], 1),
            acc[1] / max(acc[2], 1),
            window["samples"] / elapsed,
            100 * min(1.0, (wait - window["wait"]) / elapsed),
        )
        window.update(t=now, wait=wait, samples=0.0, step=step)

    def _end_epoch(
        self, epoch: int, acc: np.ndarray, start: dict, writer: Any, tb_dir: str
    ) -> dict[str, Any]:
        import tensorflow as tf

        elapsed = max(time.perf_counter() - start["t"], 1e-9)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": acc[0] / max(acc[2], 1),
            "accuracy": acc[1] / max(acc[2], 1),
            "samples": int(acc[2]),
            "images_per_s": start["samples"] / elapsed,
            "data_wait_fraction": min(
                1.0, (self.counters.get("wait_seconds") - start["wait"]) / elapsed
            ),
        }
        record.update(self.evaluate())
        workers = self.setup_.cluster.num_workers
        mine = np.zeros(workers)
        mine[self.setup_.cluster.task_index] = self.seen.pop(epoch).sum()
        record["objects_read_per_worker"] = [
            round(float(v)) for v in self.gather(tf.constant(mine)).numpy()
        ]
        logger.info(
            "epoch %d/%d done: loss %.4f accuracy %.4f%s, %.1f images/s",
            epoch + 1,
            self.config.epochs,
            record["loss"],
            record["accuracy"],
            f" val_loss {record['val_loss']:.4f} val_accuracy {record['val_accuracy']:.4f}"
            if "val_accuracy" in record
            else "",
            record["images_per_s"],
        )
        if writer is not None:
            from tensorflow.core.framework import summary_pb2

            metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            ).SerializeToString()
            with writer.as_default(step=epoch + 1):
                for key in (
                    "loss",
                    "accuracy",
                    "val_loss",
                    "val_accuracy",
                    "images_per_s",
                    "data_wait_fraction",
                ):
                    if key in record:
                        # Raw summary with the scalars plugin tag: TensorBoard reads it, and
                        # TensorFlow needs no `tensorboard` package installed to write it.
                        tf.summary.write(
                            key, tf.constant(record[key], tf.float32), metadata=metadata
                        )
            writer.flush()
            tb_uri = self.config.tensorboard_dir or self.outputs.uri("tensorboard")
            self.storage.upload_dir(tb_dir, tb_uri)
        return record

    def finish(self, result: dict[str, Any]) -> int:
        config, cluster = self.config, self.setup_.cluster
        history = result["history"]
        final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
        gate = {
            "min_val_accuracy": config.min_val_accuracy,
            "val_accuracy": final.get("val_accuracy"),
        }
        passed = config.min_val_accuracy is not None and (
            final.get("val_accuracy", -1.0) >= config.min_val_accuracy
        )
        digest = hashlib.sha256()
        for weight in self.model.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        weights_sha256 = digest.hexdigest()
        # Every worker logs it: replicas that stayed in sync end with the same digest.
        logger.info("final weights sha256 %s (worker %d)", weights_sha256, cluster.task_index)
        if not cluster.is_chief:
            logger.info("worker %d done; the chief writes the outputs", cluster.task_index)
        else:
            wait = self.counters.snapshot()
            metrics = {
                "history": history,
                "final": final,
                "quality_gate": {**gate, "passed": passed},
                "images_per_s": float(np.mean([h["images_per_s"] for h in history]))
                if history
                else 0.0,
                "data_wait_fraction": float(np.mean([h["data_wait_fraction"] for h in history]))
                if history
                else 0.0,
                "replicas": self.setup_.replicas,
                "workers": cluster.num_workers,
                "global_batch": config.batch_size,
                "per_replica_batch": self.per_replica,
                "steps": result["step"],
                "class_names": list(self.index.class_names),
                "dataset": {
                    "fingerprint": self.index.fingerprint(),
                    "objects": len(self.index),
                    "train": len(self.train_index),
                    "validation": len(self.val_index),
                },
                "dtype_policy": self.policy,
                "counters": wait,
                "weights_sha256": weights_sha256,
                "quarantined": self.train_seq.quarantined
                + (self.val_seq.quarantined if self.val_seq else []),
                "config": config.to_dict(),
            }
            if config.trace_steps:
                metrics["trace"] = self.trace
            self._export_model()
            written = {
                "labels": self.outputs.write_labels(self.index.class_names),
                "metrics": self.outputs.write_json("metrics.json", metrics),
                "tensorboard": config.tensorboard_dir or self.outputs.uri("tensorboard"),
            }
            written.update(self.exported)
            self.outputs.finish(blessed=passed, gate=gate)
            self.written = written
            logger.info("outputs: %s", ", ".join(f"{k}={v}" for k, v in written.items()))
            logger.info("%s written last", self.outputs.uri("_SUCCESS"))
        if config.min_val_accuracy is None:
            logger.info("no quality gate (--min-val-accuracy); BLESSED not written")
        elif not passed:
            raise QualityGateError(
                f"--min-val-accuracy {config.min_val_accuracy}: validation accuracy "
                f"{final.get('val_accuracy', float('nan')):.4f} is below the gate; outputs "
                "written without BLESSED"
            )
        else:
            logger.info(
                "quality gate passed: val_accuracy %.4f >= %.4f",
                final["val_accuracy"],
                config.min_val_accuracy,
            )
        return 0

    def _export_model(self) -> None:
        # A fresh float32-free copy outside the strategy: export must not see distributed
        # variables, and the serving signature should not depend on how training was spread.
        from trainer.model.zoo import build_model

        clone = build_model(
            self.config.model,
            num_classes=self.index.num_classes,
            image_size=tuple(self.config.image_size),
            input_dtype=self.config.dtype,
        )
        clone.set_weights(self.model.get_weights())
        model_uri = self.outputs.save_keras(clone)
        self.hooks.reached("export")
        self.exported = {"model": model_uri, "saved_model": self.outputs.export_saved_model(clone)}

    def close(self) -> None:
        for seq in (getattr(self, "train_seq", None), getattr(self, "val_seq", None)):
            if seq is not None:
                seq.close()


def run(config: Any, *, hooks: Hooks | None = None) -> int:
    """Trains as `config` says; returns the exit code (errors raise `TrainerError`)."""
    job = _Run(config, hooks)
    try:
        job.setup()
        job.build()
        result = job.train_translating_errors()
        job.close()  # stop the input pipeline before exporting: nothing more to fetch
        return job.finish(result)
    finally:
        job.close()
        with contextlib.suppress(Exception):
            job.storage.close()
