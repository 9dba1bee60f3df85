"""The feed configurations of the input benchmark (see support.bench): batches into TensorFlow.

memcpy                  one core copying one batch (256 x 224 x 224 x 3 uint8) into another:
                        the yardstick for the bridge
feed_ceiling            the trainer's own feed (trainer.train.feed.Feed) from a Sequence whose
                        get_batch returns one ready batch, made as the trainer's Sequences make
                        them (BatchBuffers), into a distributed step that does nothing, compiled
                        as the trainer's (a tf.function over the distributed iterator, one step
                        per call: --steps-per-execution 1); MirroredStrategy, 2 CPU replicas
feed_ceiling_1replica   the same on 1 replica
feed_ceiling_2workers   the same under MultiWorkerMirroredStrategy: 2 processes on loopback,
                        1 replica each, 128 images per worker and step; images/s of the whole
                        run (both workers' images over the slower one's time)
train_end_to_end        `python -m trainer train` on the packed workload (support.bench_packed),
                        --model linear (a step that costs almost nothing), batch 256, the
                        default decode processes; the images of epochs 2 to 6, less the 4
                        batches that may have been ready when epoch 1 ended, over the time
                        from the end of epoch 1 to the end of epoch 6 (their JSON log lines),
                        evaluation and checkpoints included; metrics.json's figures beside it
packed_local_b256, image_sequence_local_b256
                        packed_local (4 passes) and image_sequence_local at batch 256
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FEED_BATCH = 256
FEED_SIZE = (224, 224)
FEED_STEPS = 300
WARMUP_STEPS = 10
TRAIN_EPOCHS = 6
LOADER_EPOCHS = 4  # packed_local_b256: 4 passes, so its first batch's wait is not a 1/8 of it


def run_memcpy(root: Path) -> dict[str, Any]:
    import numpy as np

    del root
    src = np.random.default_rng(0).integers(0, 255, (FEED_BATCH, *FEED_SIZE, 3), np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    cpu = time.process_time()
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(40):
            np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return {
        "images": 40 * FEED_BATCH,
        "seconds": best,
        "cpu_seconds": (time.process_time() - cpu) / 5,
        "gb_per_s": round(40 * src.nbytes / best / 1e9, 2),
    }


class ReadyBatches:
    """A Sequence of `batches` that all hold one ready batch: decoding taken out."""

    def __init__(self, batch: int, batches: int) -> None:
        import numpy as np

        from trainer.data.batch_buffers import BatchBuffers

        self.x = BatchBuffers((*FEED_SIZE, 3), "uint8", keep=1).take(batch)
        self.x[...] = np.random.default_rng(0).integers(0, 255, self.x.shape, np.uint8)
        self.y = np.zeros(batch, np.int32)
        self.index = range(batch * batches)
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def get_batch(self, *, epoch: int, index: int) -> tuple[Any, Any]:
        return self.x, self.y

    def positions(self, *, epoch: int, index: int) -> Any:
        import numpy as np

        return np.arange(index * len(self.y), (index + 1) * len(self.y))


def measure_feed(replicas: int, cluster: Any = None) -> dict[str, Any]:
    """Images/s of the trainer's feed into a no-op step, on this worker."""
    from trainer.distribute.cluster import Cluster
    from trainer.distribute.strategy import make_strategy
    from trainer.train.feed import Feed

    cluster = cluster or Cluster()
    setup = make_strategy(cluster=cluster, cpu_replicas=replicas)
    import tensorflow as tf

    strategy = setup.strategy
    local = FEED_BATCH // cluster.num_workers
    steps = WARMUP_STEPS + FEED_STEPS
    feed = Feed(setup, image_size=FEED_SIZE, dtype="uint8")
    iterator = iter(
        feed.training(ReadyBatches(local, steps), start_step=0, total_steps=steps, fed={})
    )

    def noop(x, y):
        return tf.cast(tf.shape(x)[0], tf.float64) + tf.cast(tf.shape(y)[0], tf.float64) * 0

    @tf.function
    def chunk(iterator, steps):
        total = tf.zeros([], tf.float64)
        for _ in tf.range(steps):
            x, y = next(iterator)
            total += strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(noop, args=(x, y)), axis=None
            )
        return total

    for _ in range(WARMUP_STEPS):
        chunk(iterator, tf.constant(1))
    cpu, started, images = time.process_time(), time.perf_counter(), 0.0
    for _ in range(FEED_STEPS):
        images += float(chunk(iterator, tf.constant(1)))
    return {
        "images": int(images),  # every replica's, every worker's
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "replicas": setup.replicas,
        "workers": cluster.num_workers,
        "batch": FEED_BATCH,
        "steps": FEED_STEPS,
    }


def run_feed_ceiling(root: Path, *, replicas: int) -> dict[str, Any]:
    del root
    return measure_feed(replicas)


def run_feed_ceiling_2workers(root: Path) -> dict[str, Any]:
    from trainer.dev.emulator import free_port

    del root
    ports = [free_port(), free_port()]
    workers = [f"localhost:{p}" for p in ports]
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in range(2):
            tf_config = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task}}
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "support.bench_feed", "worker", str(task), tmp],
                    env={**os.environ, "TF_CONFIG": tf_config},
                )
            )
        codes = [p.wait(timeout=600) for p in procs]
        if any(codes):
            raise RuntimeError(f"feed_ceiling_2workers: workers exited {codes}")
        records = [json.loads((Path(tmp) / f"{t}.json").read_text()) for t in range(2)]
    return {
        "images": records[0]["images"],
        "seconds": max(r["seconds"] for r in records),
        "cpu_seconds": sum(r["cpu_seconds"] for r in records),
        "replicas": records[0]["replicas"],
        "workers": 2,
        "batch": FEED_BATCH,
        "steps": FEED_STEPS,
    }


def _worker(task: int, out_dir: str) -> None:
    from trainer.distribute.cluster import cluster_from_env

    cluster = cluster_from_env(os.environ)
    assert cluster.task_index == task and cluster.num_workers == 2
    record = measure_feed(1, cluster)
    Path(out_dir, f"{task}.json").write_text(json.dumps(record))


def run_train_end_to_end(root: Path) -> dict[str, Any]:
    from support import bench_packed
    from support.bench import default_decode_processes

    packed = bench_packed.packed_dir(root).resolve()
    processes = default_decode_processes()
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "trainer",
            "train",
            f"--data={packed}",
            f"--output={out}",
            "--model=linear",
            f"--batch-size={FEED_BATCH}",
            f"--image-size={FEED_SIZE[0]}",
            f"--epochs={TRAIN_EPOCHS}",
            "--val-split=0.01",
            f"--decode-processes={processes}",
            f"--cache-dir={Path(out) / 'shards'}",
        ]
        env = {**os.environ, "TRAINER_LOG_FORMAT": "json"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"trainer train exited {proc.returncode}: {proc.stderr[-2000:]}")
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    ends = _epoch_ends(proc.stdout + proc.stderr)
    history = metrics["history"]
    # Epoch 1 builds the model and fills the shard cache: timed from its end to the last end.
    # The batches prefetched while epoch 1 ended may have been ready when the clock started:
    # they are not counted.
    fed = sum(e["samples_fed_per_worker"][0] for e in history[1:])
    ahead = min(4 * FEED_BATCH, fed // 2)  # --prefetch-batches' default; half of a tiny run
    images = fed - ahead
    return {
        "images": images,
        "seconds": ends[-1] - ends[0],
        "cpu_seconds": 0.0,
        "batch": FEED_BATCH,
        "decode_processes": processes,
        "epochs_timed": len(history) - 1,
        # The trainer's own figure, per epoch: training time only, so the batches prefetched
        # while an epoch ends (evaluation, checkpoint) count for free.
        "metrics_images_per_s": [round(e["images_per_s"], 1) for e in history],
        "data_wait_fraction": [round(e["data_wait_fraction"], 3) for e in history],
    }


def _epoch_ends(log: str) -> list[float]:
    """When each "epoch N/K done" line was logged (JSON log lines), in seconds."""
    ends = []
    for line in log.splitlines():
        if line.startswith("{") and '"epoch ' in line and " done:" in line:
            record = json.loads(line)
            stamp = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
            ends.append(stamp.timestamp())
    if len(ends) != TRAIN_EPOCHS:
        raise RuntimeError(f"train_end_to_end: {len(ends)} epoch lines in the log")
    return ends


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.argv[1] == "worker":
        _worker(int(sys.argv[2]), sys.argv[3])
