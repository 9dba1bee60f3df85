"""The packed configurations of the input benchmark (see support.bench), run the same way.

packed_local          PackedSequence over the workload packed once at --max-side 448
                      (tar shards of 16 MB on local disk), the trainer's default settings:
                      one decode process per available CPU, each reading its shard ranges
packed_local_threads  the same decoding on threads in this process (--decode-processes 0)
packed_local_1process the same with one decode process: the scaling figure for 2 vs 1
tf_data_tfrecord      the same pre-sized JPEG bytes in one TFRecord file per shard, read
                      with interleave(TFRecordDataset) + map(decode_jpeg, resize), AUTOTUNE
packed_gcs_latency    PackedSequence over gs://bench/packed: the latency proxy in front of
                      the emulators; epoch 1 (shards downloaded, timed) and epoch 2 (from the
                      shard cache) with the GCS requests each made, counted by the proxy
packed_decode_448     one core decoding every sample of the --max-side 448 pack to 224 px,
                      the bytes already in memory: images per CPU-second, ms per image
packed_decode_256     the same for a pack made with --short-side 256 (JPEG)
packed_decode_256_raw the same for --short-side 256 with every image stored as raw pixels
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_SIDE = 448
SHARD_MB = 16
# The cached folders' names: --max-side, the chroma subsampling of the re-encoded JPEGs (4:4:4
# before 4:2:0 became the pack's) and the pack's shuffle seed.
TAG = f"{MAX_SIDE}-420-seed0"
WARMUP = 64
RAW_ALL = 1 << 30  # --raw-max-pixels that stores every image raw


def packed_dir(root: Path, *, short_side: int = 0, raw: bool = False) -> Path:
    """Pack the workload once (trainer pack is idempotent: a complete pack returns at once):
    at --max-side 448, or at --short-side `short_side`, every image as raw pixels if `raw`."""
    from trainer.data.storage import Storage
    from trainer.pack.writer import PackConfig, pack

    sizing = {"short_side": short_side} if short_side else {"max_side": MAX_SIDE}
    if raw:
        sizing["raw_max_pixels"] = RAW_ALL
    name = TAG if not short_side else f"s{short_side}{'raw' if raw else ''}-420-seed0"
    out = root / f"packed-{name}"
    if not (out / "_SUCCESS").exists():
        logger.info("packing %s with %s (once; reused later)", root / "images", sizing)
        started = time.perf_counter()
        cfg = PackConfig(
            source=str((root / "images").resolve()),
            output=str(out.resolve()),
            shard_size_mb=SHARD_MB,
            **sizing,
        )
        pack(cfg, Storage())
        logger.info("packed in %.0f s", time.perf_counter() - started)
    return out


def tfrecord_dir(root: Path) -> Path:
    """The packed samples' bytes as TFRecords (one file per shard), made once."""
    import tensorflow as tf

    from trainer.data.storage import Storage
    from trainer.pack.format import open_packed

    out = root / f"tfrecord-{TAG}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    packed = open_packed(str(packed_dir(root).resolve()), Storage())
    for shard, members in enumerate(packed.shard_members()):
        data = (Path(packed.root) / packed.shards[shard]).read_bytes()
        with tf.io.TFRecordWriter(str(out / f"part-{shard:05d}.tfrecord")) as writer:
            for p in members:
                payload = data[packed.offset[p] : packed.offset[p] + packed.size[p]]
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload])),
                    "label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(packed.labels[p])])
                    ),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    (out / ".complete").write_text("complete\n")
    return out


def _iterate(seq: Any, epoch: int = 0, first: list[float] | None = None) -> int:
    """Images in one pass; `first` gets the seconds until the first batch was there."""
    n, started = 0, time.perf_counter()
    for i in range(len(seq)):
        _, y = seq.get_batch(epoch=epoch, index=i)
        if i == 0 and first is not None:
            first.append(time.perf_counter() - started)
        n += len(y)
    return n


def _sequence(
    packed: Any, positions: Any, cache_dir: str, *, batch_size: int | None = None, **options: Any
) -> Any:
    from support.bench import BATCH_SIZE, TARGET_SIZE
    from trainer.data.counters import Counters
    from trainer.data.storage import Storage
    from trainer.pack.sequence import PackedSequence, PackedSplit
    from trainer.pack.shards import ShardCache

    counters = Counters()
    storage = Storage(counters=counters)
    cache = ShardCache(cache_dir, max_bytes=8 << 30, storage=storage, counters=counters)
    split = PackedSplit.of(packed, positions, cache)
    return PackedSequence(
        split,
        batch_size=batch_size or BATCH_SIZE,
        image_size=TARGET_SIZE,
        storage=storage,
        counters=counters,
        **options,
    )


def decode_pool(processes: int) -> Any:
    """A DecodePool of `processes` for the benchmark's target, or a no-op context for 0."""
    from support.bench import TARGET_SIZE
    from trainer.data.decode_pool import DecodePool

    return DecodePool(processes, size=TARGET_SIZE) if processes else contextlib.nullcontext()


def cpu_seconds(pool: Any) -> float:
    """CPU time of this process and the pool's decode processes, so far."""
    from support.bench import process_cpu_seconds

    return time.process_time() + (process_cpu_seconds(pool.pids) if pool else 0.0)


def workers_peak_rss_mb(pool: Any) -> float:
    """The decode processes' peak RSS added up (VmHWM; their shared rows counted in each)."""
    total = 0
    for pid in pool.pids if pool else []:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(total / 1024, 1)


def run_packed_local(
    root: Path,
    *,
    decode_threads: int | None = None,
    decode_processes: int = 0,
    batch_size: int | None = None,
    epochs: int = 1,
) -> dict[str, Any]:
    import numpy as np

    from trainer.data.storage import Storage
    from trainer.pack.format import open_packed

    packed = open_packed(str(packed_dir(root).resolve()), Storage())
    with tempfile.TemporaryDirectory() as cache_dir, decode_pool(decode_processes) as pool:
        options = {"decode_threads": decode_threads, "decoders": pool}
        warm = _sequence(packed, np.arange(min(WARMUP, len(packed))), cache_dir, **options)
        _iterate(warm)
        warm.close()
        seq = _sequence(
            packed,
            np.arange(len(packed)),
            cache_dir,
            batch_size=batch_size,
            epochs=epochs,
            **options,
        )
        cpu, own, started = cpu_seconds(pool), time.process_time(), time.perf_counter()
        n = sum(_iterate(seq, epoch) for epoch in range(epochs))
        seconds, cpu = time.perf_counter() - started, cpu_seconds(pool) - cpu
        own = time.process_time() - own
        seq.close()
        workers_rss = workers_peak_rss_mb(pool)
    return {
        "images": n,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "pipeline_cores_busy": round(cpu / seconds, 2),
        "trainer_process_cores_busy": round(own / seconds, 2),
        "dtype": seq.dtype,
        "decode_threads": decode_threads or os.cpu_count(),
        "decode_processes": decode_processes,
        "batch_size": seq.plan.batch_size,
        "epochs": epochs,
        "decode_workers_peak_rss_mb": workers_rss,
        "packed": f"--max-side {MAX_SIDE}, {len(packed.shards)} shards of ~{SHARD_MB} MB",
        "counters": {k: round(v, 3) for k, v in seq.counters.snapshot().items() if v},
    }


def run_packed_decode(root: Path, *, short_side: int = 0, raw: bool = False) -> dict[str, Any]:
    """One core decoding every sample of a pack to 224 px, its bytes already in memory."""
    from support.bench import TARGET_SIZE
    from trainer.data.decode import decode_image
    from trainer.data.storage import Storage
    from trainer.pack.format import open_packed

    out = packed_dir(root, short_side=short_side, raw=raw)
    packed = open_packed(str(out.resolve()), Storage())
    shards = [(out / name).read_bytes() for name in packed.shards]
    payloads = [
        shards[packed.sample_shard[p]][packed.offset[p] : packed.offset[p] + packed.size[p]]
        for p in range(len(packed))
    ]
    for data in payloads[:WARMUP]:
        decode_image(data, size=TARGET_SIZE)
    cpu, started = time.process_time(), time.perf_counter()
    for data in payloads:
        decode_image(data, size=TARGET_SIZE)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "images": len(payloads),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "ms_per_image": round(1e3 * cpu / len(payloads), 3),
        "pack_mb": round(sum(packed.shard_bytes) / 1e6, 1),
        "raw_members": sum(e == "npy" for e in packed.exts),
        "packed": packed.settings,
    }


def run_tf_data_tfrecord(root: Path) -> dict[str, Any]:
    import tensorflow as tf

    from support.bench import BATCH_SIZE, TARGET_SIZE

    files = sorted(str(p) for p in tfrecord_dir(root).glob("*.tfrecord"))
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def decode(record: Any) -> Any:
        ex = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_jpeg(ex["image"], channels=3)
        return tf.image.resize(image, TARGET_SIZE), ex["label"]

    ds = (
        tf.data.Dataset.from_tensor_slices(files)
        .shuffle(len(files))
        .interleave(
            tf.data.TFRecordDataset,
            cycle_length=4,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .shuffle(1024)
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )
    for _ in ds.take(WARMUP // BATCH_SIZE):
        pass
    cpu, started = time.process_time(), time.perf_counter()
    n = 0
    for _, y in ds:
        n += int(y.shape[0])
    return {
        "images": n,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "dtype": "float32",
        "files": len(files),
    }


def seed_packed_gcs(root: Path) -> Path:
    """The packed folder uploaded once into an emulator data dir of its own."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    from support.bench import BUCKET
    from trainer.data.storage import Storage
    from trainer.dev.emulator import EMULATOR_ENV, Emulator

    data_dir = root / f"gcs-packed-{TAG}"
    if (data_dir / ".seeded").exists():
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    source = packed_dir(root)
    saved = os.environ.get(EMULATOR_ENV)
    with Emulator(data_dir=str(data_dir.resolve())) as emulator:
        admin = gcs.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.url},
        )
        admin.create_bucket(BUCKET)
        admin.close()
        os.environ[EMULATOR_ENV] = emulator.url
        try:
            with Storage(concurrency=2) as storage:
                storage.upload_dir(str(source), f"gs://{BUCKET}/packed")
        finally:
            if saved is None:
                os.environ.pop(EMULATOR_ENV, None)
            else:
                os.environ[EMULATOR_ENV] = saved
    (data_dir / ".seeded").write_text("seeded\n")
    return data_dir


def _proxy_requests(proxy_pid: int, stats_file: Path) -> int:
    """The proxy's request count so far: SIGUSR1 makes it write its stats (support.bench)."""
    stats_file.unlink(missing_ok=True)
    os.kill(proxy_pid, signal.SIGUSR1)
    for _ in range(100):  # bounded: 10 s
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return int(json.loads(stats_file.read_text())["requests"])
        time.sleep(0.1)
    raise RuntimeError("the latency proxy did not report its stats")


def run_packed_gcs_latency(root: Path, *, workload: Any) -> dict[str, Any]:
    import numpy as np

    from support.bench import BUCKET, default_decode_processes, gcs_servers, process_cpu_seconds
    from trainer.data.storage import Storage
    from trainer.dev.emulator import EMULATOR_ENV
    from trainer.pack.format import open_packed

    local = open_packed(str(packed_dir(root).resolve()), Storage())
    data_dir = seed_packed_gcs(root)
    with (
        contextlib.ExitStack() as pins,
        tempfile.TemporaryDirectory() as tmp,
        gcs_servers(data_dir, workload=workload, stats_file=Path(tmp) / "stats.json") as (
            url,
            pids,
        ),
    ):
        stats = Path(tmp) / "stats.json"
        pool = pins.enter_context(decode_pool(default_decode_processes()))
        warm = _sequence(
            local, np.arange(min(WARMUP, len(local))), os.path.join(tmp, "w"), decoders=pool
        )
        _iterate(warm)  # decoders and imports warm, from local shards
        warm.close()
        os.environ[EMULATOR_ENV] = url
        packed = open_packed(f"gs://{BUCKET}/packed", Storage())
        seq = _sequence(packed, np.arange(len(packed)), os.path.join(tmp, "cache"), decoders=pool)
        before = _proxy_requests(pids[0], stats)
        server_cpu, cpu = process_cpu_seconds(pids), cpu_seconds(pool)
        started = time.perf_counter()
        first: list[float] = []
        n = _iterate(seq, epoch=0, first=first)
        seconds, cpu = time.perf_counter() - started, cpu_seconds(pool) - cpu
        server_cpu = process_cpu_seconds(pids) - server_cpu
        epoch1 = _proxy_requests(pids[0], stats) - before
        started2 = time.perf_counter()
        n2 = _iterate(seq, epoch=1)
        seconds2 = time.perf_counter() - started2
        epoch2 = _proxy_requests(pids[0], stats) - before - epoch1
        seq.close()
        seq.shard_cache.close()
        workers_rss, processes = workers_peak_rss_mb(pool), pool.processes if pool else 0
    return {
        "images": n,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "pipeline_cores_busy": round(cpu / seconds, 2),
        "server_cores_busy": round(server_cpu / seconds, 2),
        "dtype": seq.dtype,
        "decode_processes": processes,
        "decode_workers_peak_rss_mb": workers_rss,
        "gcs_requests_epoch1": epoch1,
        "gcs_requests_epoch2": epoch2,
        "requests_per_image_epoch1": round(epoch1 / n, 4),
        "requests_per_image_epoch2": round(epoch2 / n2, 4),
        "epoch2_images_per_s": round(n2 / seconds2, 1),
        # Epoch 1 waits for the first window of its first block of shards: the start of each
        # of 4 shards (block_shards=4, block_windows=8).
        "epoch1_first_batch_seconds": round(first[0], 2),
        "epoch1_after_first_batch_images_per_s": round(
            (n - len(seq.plan.batch(epoch=0, index=0))) / (seconds - first[0]), 1
        ),
        "counters": {k: round(v, 3) for k, v in seq.counters.snapshot().items() if v},
    }


def netem_probe() -> str:
    """Why kernel netem cannot add the latency here ("" when it could), from a real attempt.

    Creates a network namespace and a veth pair with unique names, tries a netem qdisc on the
    host end, and removes both whatever happens.
    """
    import subprocess

    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return "needs root and iproute2"
    name = f"stbench{os.getpid()}"
    host, peer = f"vst{os.getpid() % 100000}a", f"vst{os.getpid() % 100000}b"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
        ["ip", "link", "set", peer, "netns", name],
        ["tc", "qdisc", "add", "dev", host, "root", "netem", "delay", "50ms"],
    ]
    reason = ""
    try:
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=10, check=False)
            if proc.returncode != 0:
                reason = f"`{' '.join(step[:3])} ...`: {proc.stderr.strip() or proc.returncode}"
                break
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
    return reason
