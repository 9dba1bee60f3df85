"""Input-pipeline benchmark: our ImageSequence against the article's Sequence, tf.data and decode.

    python -m support.bench input                          # 2,000 mixed-size JPEGs, a table
    python -m support.bench input --source-size 512 --json # all sources 512 px, one JSON object
    python -m support.bench input --images 20000 --source-size 512 --only image_sequence_local

The workload (JPEGs, quality 90, photo-like content from `trainer.dev.synthetic`) is generated once
under `.cache/bench/<params>/` and reused. Every configuration then runs in a process of its
own, one after the other: it reads the same files, warms up on a small slice, then is timed over
one full pass. Separate processes keep one configuration's threads, caches and memory (TensorFlow's
above all) from leaking into the next one's figures, and give each its own peak RSS.

Configurations (batch 32, target 224x224 where batching applies):
  seed_sequence               the article's `ImageDataGenerator(Sequence)`, fixed to return labels
  tf_data                     keras.utils.image_dataset_from_directory(...).prefetch(AUTOTUNE)
  image_sequence_local        our ImageSequence over the local folder, the trainer's default
                              settings: one decode process per available CPU (DecodePool)
  image_sequence_local_threads the same decoding on threads in this process (--decode-processes 0)
  image_sequence_gcs_latency  our ImageSequence over gs://, through a FaultProxy that adds
                              --latency-ms per request and spreads requests round-robin over
                              --emulators gcp-storage-emulator processes sharing one data dir
  decode_limit                read + decode_image per file on all cores, no batching (threads
                              and processes both tried; the faster one is reported)
  tf_data_tfrecord, packed_local, packed_local_threads, packed_local_1process,
  packed_gcs_latency, packed_decode_448, packed_decode_256, packed_decode_256_raw
                              the packed data (trainer pack --max-side 448, or --short-side 256):
                              support.bench_packed
  image_sequence_local_b256, packed_local_b256, memcpy, feed_ceiling, feed_ceiling_1replica,
  feed_ceiling_2workers, train_end_to_end
                              batch 256, and batches into TensorFlow: support.bench_feed

The emulator serves one request at a time, so one emulator behind a latency proxy would measure
the emulator. K emulators started with the same `--data-dir` all serve the objects seeded once
(each reads the object metadata when it starts and the object bytes from disk per request).
The proxy runs in a process of its own (`python -m support.bench proxy`), as a real object store
would be elsewhere; the CPU time the emulators and the proxy use is reported, because on a small
machine they compete with the pipeline for the same cores. CPU seconds and peak RSS include
the decode processes where they run (their RSS as `decode_workers_peak_rss_mb`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support import bench_feed, bench_packed
from trainer.dev.emulator import EMULATOR_ENV

logger = logging.getLogger(__name__)

CONFIGS = (
    "seed_sequence",
    "tf_data",
    "tf_data_tfrecord",
    "image_sequence_local",
    "image_sequence_local_threads",
    "image_sequence_gcs_latency",
    "packed_local",
    "packed_local_threads",
    "packed_local_1process",
    "packed_gcs_latency",
    "decode_limit",
    "image_sequence_local_b256",
    "packed_local_b256",
    "memcpy",
    "feed_ceiling",
    "feed_ceiling_1replica",
    "feed_ceiling_2workers",
    "train_end_to_end",
    "packed_decode_448",
    "packed_decode_256",
    "packed_decode_256_raw",
)
BATCH_SIZE = 32
TARGET_SIZE = (224, 224)
QUALITY = 90
MIXED_SIDES = (320, 2048)
BUCKET = "bench"
WARMUP_IMAGES = 64


@dataclasses.dataclass(frozen=True)
class Workload:
    """What is generated and measured; `key` names its cache folder."""

    images: int
    source_size: int | None  # None: longer side mixed in MIXED_SIDES
    latency_ms: float
    emulators: int
    quality: int = QUALITY
    seed: int = 0

    @property
    def key(self) -> str:
        sides = (
            f"{MIXED_SIDES[0]}-{MIXED_SIDES[1]}"
            if self.source_size is None
            else str(self.source_size)
        )
        return f"images-{self.images}_side-{sides}_q{self.quality}_seed{self.seed}"

    def describe(self, root: Path) -> dict[str, Any]:
        return {
            "images": self.images,
            "format": f"JPEG quality {self.quality}, photo-like (trainer.dev.synthetic)",
            "source_longer_side_px": (
                list(MIXED_SIDES) if self.source_size is None else self.source_size
            ),
            "target_size": list(TARGET_SIZE),
            "batch_size": BATCH_SIZE,
            "latency_ms": self.latency_ms,
            "emulators": self.emulators,
            "dir": str(root / "images"),
            "bytes": sum(p.stat().st_size for p in (root / "images").rglob("*.jpg")),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "timing": "full passes (best kept, see repeats) after a warm-up on "
            f"{WARMUP_IMAGES} images; listing/setup not timed; each pass in a process of its "
            "own, one after another, never two at once",
            "gcs_server": (
                f"FaultProxy (own process, +{self.latency_ms:g} ms per request) round-robin "
                f"over {self.emulators} gcp-storage-emulator processes sharing one on-disk "
                "--data-dir, seeded once"
            ),
        }


# --- workload ---------------------------------------------------------------------------------


def prepare_images(workload: Workload, *, cache_root: Path) -> Path:
    """Generate the workload's JPEGs once; return its cache folder (images under `images/`)."""
    from trainer.dev import synthetic

    root = cache_root / workload.key
    marker = root / ".complete"
    if marker.exists():
        return root
    if (root / "images").exists():
        shutil.rmtree(root / "images")  # an interrupted generation: start over
    logger.info("generating %d JPEGs under %s (once; reused later)", workload.images, root)
    started = time.perf_counter()
    sides: dict[str, int] = (
        {"fixed_side": workload.source_size}
        if workload.source_size is not None
        else {"min_side": MIXED_SIDES[0], "max_side": MIXED_SIDES[1]}
    )
    synthetic.write_benchmark_images(
        str(root / "images"),
        count=workload.images,
        quality=workload.quality,
        seed=workload.seed,
        **sides,
    )
    marker.write_text("complete\n")
    logger.info("generated in %.0f s", time.perf_counter() - started)
    return root


def _labelled_files(images_dir: Path) -> tuple[list[str], list[int]]:
    """Files and labels in the order (and with the class ids) of our discovery."""
    from trainer.data.index import discover
    from trainer.data.storage import Storage

    index = discover(str(images_dir), storage=Storage())
    return list(index.uris), list(index.labels)


# --- the article's Sequence -----------------------------------------------------------------


def _seed_sequence_class() -> type:
    # ---- BEGIN code from ../shared/origin-article.txt, verbatim except where marked ----------
    import os  # noqa: F401

    import numpy as np

    # CHANGED (Keras 3): `tensorflow.keras.utils.Sequence` and
    # `tensorflow.keras.preprocessing.image.{load_img, img_to_array}` are now these.
    from keras.utils import Sequence, img_to_array, load_img

    class ImageDataGenerator(Sequence):
        def __init__(self, image_filenames, labels, batch_size, img_size):  # CHANGED: labels
            self.image_filenames = image_filenames
            self.labels = labels  # CHANGED: labels
            self.batch_size = batch_size
            self.img_size = img_size

        def __len__(self):
            return int(np.floor(len(self.image_filenames) / self.batch_size))

        def __getitem__(self, index):
            batch_filenames = self.image_filenames[
                index * self.batch_size : (index + 1) * self.batch_size
            ]
            images = np.array([self.load_image(filename) for filename in batch_filenames])
            # CHANGED: also return the labels of the batch.
            labels = np.array(self.labels[index * self.batch_size : (index + 1) * self.batch_size])
            return images, labels

        def load_image(self, filename):
            img = load_img(filename, target_size=self.img_size)
            return img_to_array(img) / 255.0

    # ---- END code from the article -----------------------------------------------------------
    return ImageDataGenerator


# --- configurations (each runs in its own worker process) ------------------------------------


def _iterate_sequence(seq: Any) -> int:
    n = 0
    for i in range(len(seq)):
        _, y = seq[i]
        n += len(y)
    return n


def _strided(items: list, count: int) -> list:
    step = max(1, len(items) // count)
    return items[::step][:count]


def run_seed_sequence(root: Path) -> dict[str, Any]:
    files, labels = _labelled_files(root / "images")
    generator = _seed_sequence_class()
    warm = _strided(list(zip(files, labels, strict=True)), WARMUP_IMAGES)
    _iterate_sequence(
        generator([f for f, _ in warm], [lab for _, lab in warm], BATCH_SIZE, TARGET_SIZE)
    )
    seq = generator(files, labels, BATCH_SIZE, TARGET_SIZE)
    cpu, started = time.process_time(), time.perf_counter()
    n = _iterate_sequence(seq)
    return {
        "images": n,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "dtype": "float32",
    }


def run_tf_data(root: Path) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        str(root / "images"), image_size=TARGET_SIZE, batch_size=BATCH_SIZE, verbose=False
    ).prefetch(tf.data.AUTOTUNE)
    for _ in ds.take(WARMUP_IMAGES // BATCH_SIZE):  # warm-up: graph tracing, thread pools
        pass
    cpu, started = time.process_time(), time.perf_counter()
    n = 0
    for _, y in ds:
        n += int(y.shape[0])
    return {
        "images": n,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,  # all of TensorFlow's threads
        "dtype": "float32",
    }


def process_cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time used so far by these (live) processes, from /proc (Linux)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def _run_image_sequence(
    data_uri: str,
    *,
    storage: Any,
    server_pids: list[int] | None = None,
    decode_processes: int = 0,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    from trainer.data.index import DatasetIndex, discover
    from trainer.data.sequence import ImageSequence

    index = discover(data_uri, storage=storage)
    warm = _strided(list(zip(index.uris, index.labels, strict=True)), WARMUP_IMAGES)
    warm_index = DatasetIndex(
        tuple(u for u, _ in warm), tuple(lab for _, lab in warm), index.class_names
    )
    with bench_packed.decode_pool(decode_processes) as pool:
        options = dict(
            batch_size=batch_size, image_size=TARGET_SIZE, storage=storage, decoders=pool
        )
        with ImageSequence(warm_index, **options) as seq:
            _iterate_sequence(seq)
        seq = ImageSequence(index, **options)
        server_cpu = process_cpu_seconds(server_pids or [])
        self_cpu = bench_packed.cpu_seconds(pool)
        started = time.perf_counter()
        n = _iterate_sequence(seq)
        seconds = time.perf_counter() - started
        self_cpu = bench_packed.cpu_seconds(pool) - self_cpu
        server_cpu = process_cpu_seconds(server_pids or []) - server_cpu
        seq.close()
        workers_rss = bench_packed.workers_peak_rss_mb(pool)
    counters = seq.counters.snapshot()
    extra = {}
    if server_pids:
        # How much of the machine the stand-in object store took during the timed pass.
        extra["server_cpu_seconds"] = round(server_cpu, 1)
        extra["server_cores_busy"] = round(server_cpu / seconds, 2)
    return {
        **extra,
        "cpu_seconds": self_cpu,
        "pipeline_cores_busy": round(self_cpu / seconds, 2),
        "images": n,
        "seconds": seconds,
        "dtype": seq.dtype,
        "decode_processes": decode_processes,
        "batch_size": batch_size,
        "decode_workers_peak_rss_mb": workers_rss,
        "fetch_threads": seq.fetch_threads,
        "prefetch_batches": seq.prefetch_batches,
        "counters": {k: round(v, 3) for k, v in counters.items() if v},
    }


def default_decode_processes() -> int:
    """What the trainer runs by default (--decode-processes unset): one per available CPU."""
    from trainer.data.decode_pool import available_cpus

    return available_cpus()


def run_image_sequence_local(
    root: Path, *, decode_processes: int, batch_size: int = BATCH_SIZE
) -> dict[str, Any]:
    from trainer.data.storage import Storage

    return _run_image_sequence(
        str((root / "images").resolve()),
        storage=Storage(),
        decode_processes=decode_processes,
        batch_size=batch_size,
    )


def run_image_sequence_gcs_latency(root: Path, *, workload: Workload) -> dict[str, Any]:
    from trainer.data.storage import Storage

    data_dir = seed_gcs(root)
    with gcs_servers(data_dir, workload=workload) as (proxy_url, pids):
        os.environ[EMULATOR_ENV] = proxy_url  # read when the Storage creates its client
        storage = Storage()
        result = _run_image_sequence(
            f"gs://{BUCKET}/images",
            storage=storage,
            server_pids=pids,
            decode_processes=default_decode_processes(),
        )
        storage.close()
    return result


def _read_decode(path: str) -> None:
    from trainer.data.decode import decode_image

    with open(path, "rb") as f:
        data = f.read()
    decode_image(data, size=TARGET_SIZE)


def _time_pool(pool: concurrent.futures.Executor, files: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its pool workers) of one pass."""
    import multiprocessing

    list(pool.map(_read_decode, _strided(files, WARMUP_IMAGES)))  # warm-up (and fork)
    workers = [p.pid for p in multiprocessing.active_children()]
    cpu = time.process_time() + process_cpu_seconds(workers)
    started = time.perf_counter()
    list(pool.map(_read_decode, files, chunksize=1 if isinstance(pool, _Threads) else 8))
    seconds = time.perf_counter() - started
    return seconds, time.process_time() + process_cpu_seconds(workers) - cpu


_Threads = concurrent.futures.ThreadPoolExecutor


def run_decode_limit(root: Path) -> dict[str, Any]:
    from trainer.data.decode import JPEG_BACKEND

    files, _ = _labelled_files(root / "images")
    workers = os.cpu_count() or 1
    with _Threads(max_workers=workers) as pool:
        threads_s, threads_cpu = _time_pool(pool, files)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        processes_s, processes_cpu = _time_pool(pool, files)
    best = min(threads_s, processes_s)
    return {
        "images": len(files),
        "seconds": best,
        "cpu_seconds": threads_cpu if threads_s <= processes_s else processes_cpu,
        "dtype": "uint8",
        "executor": "threads" if threads_s <= processes_s else "processes",
        "workers": workers,
        "jpeg_backend": JPEG_BACKEND,
        "threads_images_per_s": round(len(files) / threads_s, 1),
        "processes_images_per_s": round(len(files) / processes_s, 1),
        "reads": "each file read from local disk (page cache) then decoded, per task",
    }


# --- GCS emulators and the proxy --------------------------------------------------------------


def _start_proxy(
    stack: contextlib.ExitStack,
    *,
    upstreams: list[str],
    latency_ms: float,
    stats_file: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """`python -m support.bench proxy` as a child process; (process, URL) once it answers."""
    import requests

    from trainer.dev.emulator import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "support.bench",
            "proxy",
            f"--port={port}",
            f"--latency-ms={latency_ms}",
            *(f"--upstream={u}" for u in upstreams),
            *([f"--stats-file={stats_file}"] if stats_file else []),
        ],
    )
    stack.callback(_stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the latency proxy exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return proc, url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the latency proxy did not answer on {url} in 60 s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def seed_gcs(root: Path) -> Path:
    """Upload the workload into an emulator data dir once (cached beside the images)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    from trainer.data.storage import Storage
    from trainer.dev.emulator import Emulator

    data_dir = root / "gcs"
    marker = data_dir / ".seeded"
    if marker.exists():
        return data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    logger.info("seeding the emulator data dir %s (once; reused later)", data_dir)
    started = time.perf_counter()
    saved = os.environ.get(EMULATOR_ENV)
    # The emulator insists on an absolute --data-dir.
    with Emulator(data_dir=str(data_dir.resolve())) as emulator:
        url = emulator.url
        admin = gcs.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": url},
        )
        admin.create_bucket(BUCKET)
        admin.close()
        os.environ[EMULATOR_ENV] = url
        try:
            # The emulator serves one request at a time; more threads would only queue.
            with Storage(concurrency=2) as storage:
                storage.upload_dir(str(root / "images"), f"gs://{BUCKET}/images")
        finally:
            if saved is None:
                os.environ.pop(EMULATOR_ENV, None)
            else:
                os.environ[EMULATOR_ENV] = saved
    marker.write_text("seeded\n")
    logger.info("seeded in %.0f s", time.perf_counter() - started)
    return data_dir


@contextlib.contextmanager
def gcs_servers(
    data_dir: Path, *, workload: Workload, stats_file: Path | None = None
) -> Iterator[tuple[str, list[int]]]:
    """K emulators on one data dir and a latency proxy in front; yields (proxy URL, pids),
    the proxy's pid first (SIGUSR1 makes it write its request counts to `stats_file`)."""
    from trainer.dev.emulator import Emulator

    with contextlib.ExitStack() as stack:
        emulators = [
            stack.enter_context(Emulator(data_dir=str(data_dir.resolve())))
            for _ in range(workload.emulators)
        ]
        proxy, url = _start_proxy(
            stack,
            upstreams=[e.url for e in emulators],
            latency_ms=workload.latency_ms,
            stats_file=stats_file,
        )
        yield url, [proxy.pid, *(e.pid for e in emulators)]


def serve_proxy(
    *, port: int, upstreams: list[str], latency_ms: float, stats_file: str | None = None
) -> None:
    """Run a FaultProxy with latency only until SIGTERM/SIGINT; SIGUSR1 writes its stats."""
    from support.httpproxy import FaultProxy

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FaultProxy(upstreams=upstreams, port=port, latency_ms=latency_ms) as proxy:
        if stats_file:

            def dump(*_: object) -> None:
                tmp = f"{stats_file}.tmp"
                Path(tmp).write_text(json.dumps(proxy.stats()))
                os.replace(tmp, stats_file)

            signal.signal(signal.SIGUSR1, dump)
        stop.wait()


# --- orchestration ----------------------------------------------------------------------------


def run_worker(name: str, workload: Workload, *, cache_root: Path) -> dict[str, Any]:
    """Run one configuration in this process; returns its result record."""
    root = cache_root / workload.key
    runners = {
        "seed_sequence": run_seed_sequence,
        "tf_data": run_tf_data,
        "image_sequence_local": lambda r: run_image_sequence_local(
            r, decode_processes=default_decode_processes()
        ),
        "image_sequence_local_threads": lambda r: run_image_sequence_local(r, decode_processes=0),
        "image_sequence_gcs_latency": lambda r: run_image_sequence_gcs_latency(
            r, workload=workload
        ),
        "decode_limit": run_decode_limit,
        "tf_data_tfrecord": bench_packed.run_tf_data_tfrecord,
        "packed_local": lambda r: bench_packed.run_packed_local(
            r, decode_processes=default_decode_processes()
        ),
        "packed_local_threads": lambda r: bench_packed.run_packed_local(r, decode_processes=0),
        "packed_local_1process": lambda r: bench_packed.run_packed_local(r, decode_processes=1),
        "packed_gcs_latency": lambda r: bench_packed.run_packed_gcs_latency(r, workload=workload),
        "image_sequence_local_b256": lambda r: run_image_sequence_local(
            r, decode_processes=default_decode_processes(), batch_size=bench_feed.FEED_BATCH
        ),
        "packed_local_b256": lambda r: bench_packed.run_packed_local(
            r,
            decode_processes=default_decode_processes(),
            batch_size=bench_feed.FEED_BATCH,
            epochs=bench_feed.LOADER_EPOCHS,
        ),
        "memcpy": bench_feed.run_memcpy,
        "feed_ceiling": lambda r: bench_feed.run_feed_ceiling(r, replicas=2),
        "feed_ceiling_1replica": lambda r: bench_feed.run_feed_ceiling(r, replicas=1),
        "feed_ceiling_2workers": bench_feed.run_feed_ceiling_2workers,
        "train_end_to_end": bench_feed.run_train_end_to_end,
        "packed_decode_448": bench_packed.run_packed_decode,
        "packed_decode_256": lambda r: bench_packed.run_packed_decode(r, short_side=256),
        "packed_decode_256_raw": lambda r: bench_packed.run_packed_decode(
            r, short_side=256, raw=True
        ),
    }
    result = runners[name](root)
    seconds = result.pop("seconds")
    cpu_seconds = result.pop("cpu_seconds")
    record = {
        "name": name,
        "images_per_s": round(result["images"] / seconds, 1),
        # Throughput per CPU second barely moves with other load on the machine; wall-clock
        # images/s does.
        "images_per_cpu_s": round(result["images"] / cpu_seconds, 1) if cpu_seconds else None,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        **result,
        # With the decode processes' own peaks added: what the pipeline costs the machine.
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            + result.get("decode_workers_peak_rss_mb", 0),
            1,
        ),
    }
    record["gcs_requests_per_image"] = _requests_per_image(name, record)
    return record


def _requests_per_image(name: str, record: dict[str, Any]) -> float:
    if name == "packed_gcs_latency":
        return record["requests_per_image_epoch1"]
    if name == "image_sequence_gcs_latency":  # one GET per object (retries not counted)
        return round(record["counters"].get("objects_fetched", 0) / record["images"], 3)
    return 0.0


def _run_in_process(name: str, extra_args: list[str]) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "support.bench", "input", f"--worker={name}", *extra_args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        logger.error("benchmark %s failed (exit %d); see above", name, proc.returncode)
        return None
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    logger.info("%s: %.1f images/s", name, record["images_per_s"])
    return record


def run_all(
    workload: Workload,
    *,
    only: list[str],
    cache_root: Path,
    extra_args: list[str],
    repeats: int = 1,
) -> dict[str, Any]:
    """Run each configuration `repeats` times, in rounds; keep the best pass of each."""
    root = prepare_images(workload, cache_root=cache_root)
    doc: dict[str, Any] = {"workload": workload.describe(root), "results": []}
    doc["workload"]["repeats"] = repeats
    if any("gcs" in name for name in only):
        why = bench_packed.netem_probe()
        doc["workload"]["latency_method"] = (
            f"proxy (kernel netem unavailable: {why})"
            if why
            else "proxy (netem works here, but the netns data path is not implemented)"
        )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in only}
    # Rounds rather than back-to-back repeats: a burst of load from elsewhere on the machine
    # then hits different configurations in different rounds, and best-of discards it.
    for round_no in range(repeats):
        for name in only:
            logger.info("running %s (round %d of %d)", name, round_no + 1, repeats)
            record = _run_in_process(name, extra_args)
            if record is not None:
                runs[name].append(record)
    for name in only:
        if not runs[name]:
            # The others still ran: one broken configuration should not cost the rest.
            doc["results"].append(
                {"name": name, "images_per_s": None, "peak_rss_mb": None, "error": True}
            )
            continue
        best = max(runs[name], key=lambda r: r["images_per_s"])
        best["runs_images_per_s"] = [r["images_per_s"] for r in runs[name]]
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[name])
        doc["results"].append(best)
    doc["workload"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["peak_rss_mb"] = max(
        [r["peak_rss_mb"] for r in doc["results"] if r["peak_rss_mb"] is not None]
        + [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    )
    doc["peak_rss_mb"] = round(doc["peak_rss_mb"], 1)
    doc["targets"] = evaluate_targets(doc["results"], mixed=workload.source_size is None)
    return doc


def evaluate_targets(results: list[dict[str, Any]], *, mixed: bool) -> list[dict[str, Any]]:
    """The issue's ratio targets, for those whose two configurations were measured."""
    rate = {r["name"]: r["images_per_s"] for r in results if r["images_per_s"] is not None}
    wanted = [
        ("packed_local", "tf_data", 5.0),
        ("packed_local", "tf_data_tfrecord", 1.0),
        ("packed_gcs_latency", "packed_local", 0.9),
        ("image_sequence_local", "decode_limit", 0.95),
        ("packed_local", "packed_local_1process", 1.8),
        # Issue 18: the bridge into TensorFlow, the trainer around its loader, small batches.
        ("feed_ceiling", "memcpy", 0.5),
        ("feed_ceiling_1replica", "memcpy", 0.5),
        ("feed_ceiling_2workers", "memcpy", 0.5),
        ("train_end_to_end", "packed_local_b256", 0.9),
        ("packed_local", "packed_local_b256", 0.8),
        ("image_sequence_local", "image_sequence_local_b256", 0.8),
        # Issue 21: decode per core of a pack sized for 224 px training; raw pixels reported.
        ("packed_decode_256", "packed_decode_448", 2.5),
        ("packed_decode_256_raw", "packed_decode_448", 2.5),
    ]
    targets = []
    for name, base, minimum in wanted:
        if name in rate and base in rate and rate[base] > 0:
            ratio = rate[name] / rate[base]
            targets.append(
                {
                    "target": f"{name} >= {minimum:g} x {base}",
                    "ratio": round(ratio, 2),
                    "pass": ratio >= minimum,
                }
            )
    return targets


def format_table(doc: dict[str, Any]) -> str:
    rate = {r["name"]: r["images_per_s"] for r in doc["results"] if r["images_per_s"]}
    w = doc["workload"]
    sides = w["source_longer_side_px"]
    lines = [
        f"workload: {w['images']} JPEGs (q{QUALITY}), longer side "
        f"{sides if isinstance(sides, int) else f'{sides[0]}-{sides[1]}'} px, "
        f"{w['bytes'] / 1e6:.0f} MB -> {TARGET_SIZE[0]}x{TARGET_SIZE[1]}, batch {BATCH_SIZE}; "
        f"{w['cpus']} CPUs, load average {w['load_average_at_start'][0]} at start, "
        f"{w['load_average_at_end'][0]} at end; best of {w['repeats']} pass(es) each",
        "",
        f"{'name':<28} {'images/s':>9} {'x tf_data':>10} {'x decode_limit':>15} "
        f"{'img/CPU-s':>10} {'peak RSS MB':>12} {'req/img':>8}",
    ]
    for r in doc["results"]:
        if r["images_per_s"] is None:
            lines.append(f"{r['name']:<28} {'FAILED':>9}")
            continue

        def ratio(base: str, r: dict[str, Any] = r) -> str:
            return f"{r['images_per_s'] / rate[base]:.2f}" if rate.get(base) else "-"

        lines.append(
            f"{r['name']:<28} {r['images_per_s']:>9.1f} {ratio('tf_data'):>10} "
            f"{ratio('decode_limit'):>15} {r['images_per_cpu_s'] or 0:>10.1f} "
            f"{r['peak_rss_mb']:>12.0f} {r.get('gcs_requests_per_image', 0):>8.3f}"
        )
    for r in doc["results"]:
        if r["images_per_s"] is None:
            continue
        if r["name"] == "decode_limit":
            lines.append(
                f"\ndecode_limit: read+decode per file, {r['workers']} workers, "
                f"{r['jpeg_backend']}; threads {r['threads_images_per_s']}/s, "
                f"processes {r['processes_images_per_s']}/s (best: {r['executor']})"
            )
        if r["name"] == "image_sequence_gcs_latency":
            lines.append(
                f"\ngcs: {w['gcs_server']}; during the timed pass the servers kept "
                f"{r['server_cores_busy']} cores busy, the pipeline {r['pipeline_cores_busy']}, "
                f"of {w['cpus']}"
            )
        if r["name"] == "packed_gcs_latency":
            lines.append(
                f"\npacked_gcs_latency: GCS requests epoch 1 {r['gcs_requests_epoch1']} "
                f"({r['requests_per_image_epoch1']}/image), epoch 2 {r['gcs_requests_epoch2']} "
                f"({r['requests_per_image_epoch2']}/image, {r['epoch2_images_per_s']} images/s); "
                f"servers {r['server_cores_busy']} cores busy"
            )
    if "latency_method" in w:
        lines.append(f"\nlatency: {w['latency_method']}")
    if doc["targets"]:
        lines.append("\ntargets (issues 10, 18 and 21):")
        for t in doc["targets"]:
            lines.append(
                f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<52} ratio {t['ratio']:.2f}"
            )
    lines.append(
        f"\npeak RSS: {doc['peak_rss_mb']:.0f} MB (largest of the benchmark processes; "
        "compare --only image_sequence_local at 2,000 and 20,000 images)"
    )
    return "\n".join(lines)


def _parse_only(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(unknown) or '(none)'}; choose from {', '.join(CONFIGS)}"
        )
    return [n for n in CONFIGS if n in names]  # always in the canonical order


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return n


def _non_negative(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m support.bench", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="input")
    inp = sub.add_parser("input", help="benchmark the input pipelines")
    inp.add_argument("--images", type=_positive_int, default=2000, help="default 2000")
    inp.add_argument(
        "--source-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="all sources this many px on the longer side (default: mixed 320-2048)",
    )
    inp.add_argument("--latency-ms", type=_non_negative, default=50.0, metavar="MS")
    inp.add_argument(
        "--emulators", type=_positive_int, default=8, help="gcp-storage-emulator processes"
    )
    inp.add_argument(
        "--only",
        type=_parse_only,
        default=list(CONFIGS),
        metavar="NAME,...",
        help=f"run a subset of: {', '.join(CONFIGS)}",
    )
    inp.add_argument(
        "--cache-dir", default=".cache/bench", help="where workloads are kept (default %(default)s)"
    )
    inp.add_argument(
        "--repeats",
        type=_positive_int,
        default=2,
        help="timed passes per configuration, best kept (default %(default)s)",
    )
    inp.add_argument("--json", action="store_true", help="print one JSON object")
    inp.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    proxy = sub.add_parser("proxy")  # internal: the latency proxy's own process
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--latency-ms", type=float, required=True)
    proxy.add_argument("--upstream", action="append", required=True)
    proxy.add_argument("--stats-file", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "proxy":
        serve_proxy(
            port=args.port,
            upstreams=args.upstream,
            latency_ms=args.latency_ms,
            stats_file=args.stats_file,
        )
        return 0
    workload = Workload(
        images=args.images,
        source_size=args.source_size,
        latency_ms=args.latency_ms,
        emulators=args.emulators,
    )
    cache_root = Path(args.cache_dir)
    if args.worker:
        record = run_worker(args.worker, workload, cache_root=cache_root)
        sys.stdout.write(json.dumps(record) + "\n")
        return 0
    passed = [
        f"--images={args.images}",
        f"--latency-ms={args.latency_ms}",
        f"--emulators={args.emulators}",
        f"--cache-dir={args.cache_dir}",
        *([f"--source-size={args.source_size}"] if args.source_size else []),
    ]
    doc = run_all(
        workload, only=args.only, cache_root=cache_root, extra_args=passed, repeats=args.repeats
    )
    sys.stdout.write((json.dumps(doc) if args.json else format_table(doc)) + "\n")
    return 1 if any(r["images_per_s"] is None for r in doc["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
