"""The input benchmark runs end to end on a tiny workload; figures are never asserted.

.venv/bin/pytest tests/test_bench.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import bench
from support.trainer_runs import environ


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "support.bench", "input", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ(),
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_smoke_json_has_every_configuration(tmp_path: Path) -> None:
    # 40 images: one full batch of 32 for the article's Sequence (it drops the remainder).
    proc = _bench(
        "--images=40",
        "--emulators=2",
        "--latency-ms=5",
        "--repeats=1",
        f"--cache-dir={tmp_path / 'cache'}",
        "--json",
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"workload", "results", "peak_rss_mb"}
    assert doc["workload"]["images"] == 40
    assert doc["workload"]["latency_ms"] == 5
    assert [r["name"] for r in doc["results"]] == list(bench.CONFIGS)
    for r in doc["results"]:
        assert r["images_per_s"] > 0, r
        assert r["peak_rss_mb"] > 0, r
    delivered = {r["name"]: r["images"] for r in doc["results"]}
    assert delivered["seed_sequence"] == 32  # floor(40 / 32) batches, as in the article
    assert delivered["tf_data"] == 40
    # Every sample once; with replica_multiple=1 "pad" needs no repeats (batches of 32 and 8).
    assert delivered["image_sequence_local"] == delivered["image_sequence_local_threads"] == 40
    assert delivered["image_sequence_gcs_latency"] == 40
    assert delivered["decode_limit"] == 40
    for name in (
        "tf_data_tfrecord",
        "packed_local",
        "packed_local_threads",
        "packed_local_1process",
    ):
        assert delivered[name] == 40, name
    packed_gcs = next(r for r in doc["results"] if r["name"] == "packed_gcs_latency")
    assert packed_gcs["images"] == 40
    # One small shard: one GET in epoch 1, nothing in epoch 2.
    assert packed_gcs["gcs_requests_epoch1"] == 1
    assert packed_gcs["gcs_requests_epoch2"] == 0
    assert doc["workload"]["latency_method"].startswith("proxy")
    # The largest of the benchmark processes: the configurations' and the parent's own (which
    # generates the workload, and may be the largest).
    assert doc["peak_rss_mb"] >= max(r["peak_rss_mb"] for r in doc["results"])
    by_name = {r["name"]: r for r in doc["results"]}
    assert by_name["packed_local"]["decode_processes"] == bench.default_decode_processes()
    assert by_name["packed_local_1process"]["decode_workers_peak_rss_mb"] > 0
    assert by_name["packed_local_threads"]["decode_processes"] == 0
    assert len(doc["targets"]) == 13
    for name in ("packed_decode_448", "packed_decode_256", "packed_decode_256_raw"):
        assert by_name[name]["images"] == 40 and by_name[name]["ms_per_image"] > 0, name
    assert by_name["packed_decode_256_raw"]["raw_members"] == 40
    assert by_name["packed_decode_256"]["raw_members"] == 0
    assert by_name["packed_decode_256"]["packed"]["short_side"] == 256
    # Issue 18's rows: the feed's steps, batch 256, and the trainer on the 40-image pack.
    feed = support_feed()
    assert by_name["memcpy"]["images"] == 40 * feed.FEED_BATCH
    for name, replicas, workers in (
        ("feed_ceiling", 2, 1),
        ("feed_ceiling_1replica", 1, 1),
        ("feed_ceiling_2workers", 2, 2),
    ):
        row = by_name[name]
        assert row["images"] == feed.FEED_STEPS * feed.FEED_BATCH, name
        assert (row["replicas"], row["workers"]) == (replicas, workers), name
    assert by_name["image_sequence_local_b256"]["batch_size"] == 256
    assert by_name["packed_local_b256"]["images"] == 40 * feed.LOADER_EPOCHS
    e2e = by_name["train_end_to_end"]
    assert e2e["epochs_timed"] == feed.TRAIN_EPOCHS - 1 and e2e["images"] == 100  # 200 less half
    assert e2e["decode_processes"] == bench.default_decode_processes()
    # The workload is cached: the images and the seeded emulator data dir stay for next time.
    root = tmp_path / "cache" / "images-40_side-320-2048_q90_seed0"
    assert (root / ".complete").exists() and (root / "gcs" / ".seeded").exists()


def support_feed():
    from support import bench_feed

    return bench_feed


def test_prepare_images_generates_once(tmp_path: Path) -> None:
    workload = bench.Workload(images=3, source_size=64, latency_ms=0, emulators=1)
    root = bench.prepare_images(workload, cache_root=tmp_path)
    files = sorted(root.glob("images/*/*.jpg"))
    assert len(files) == 3 and root.name == "images-3_side-64_q90_seed0"
    stamps = [f.stat().st_mtime_ns for f in files]
    assert bench.prepare_images(workload, cache_root=tmp_path) == root
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_targets_use_the_issue_thresholds() -> None:
    results = [
        {"name": "tf_data", "images_per_s": 100.0},
        {"name": "tf_data_tfrecord", "images_per_s": 600.0},
        {"name": "image_sequence_local", "images_per_s": 120.0},
        {"name": "decode_limit", "images_per_s": 125.0},
        {"name": "packed_local", "images_per_s": 550.0},
        {"name": "packed_local_1process", "images_per_s": 300.0},
        {"name": "packed_gcs_latency", "images_per_s": 500.0},
        {"name": "memcpy", "images_per_s": 1000.0},
        {"name": "feed_ceiling", "images_per_s": 500.0},
        {"name": "feed_ceiling_1replica", "images_per_s": 499.0},
        {"name": "train_end_to_end", "images_per_s": 450.0},
        {"name": "packed_local_b256", "images_per_s": 500.0},
    ]
    got = {t["target"]: t["pass"] for t in bench.evaluate_targets(results, mixed=True)}
    assert got == {
        "packed_local >= 5 x tf_data": True,
        "packed_local >= 1 x tf_data_tfrecord": False,
        "packed_gcs_latency >= 0.9 x packed_local": True,
        "image_sequence_local >= 0.95 x decode_limit": True,
        "packed_local >= 1.8 x packed_local_1process": True,
        "feed_ceiling >= 0.5 x memcpy": True,
        "feed_ceiling_1replica >= 0.5 x memcpy": False,
        "train_end_to_end >= 0.9 x packed_local_b256": True,
        "packed_local >= 0.8 x packed_local_b256": True,
    }


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--only=image_sequence_local,nope", "unknown benchmark nope"), ("--images=0", "positive")],
)
def test_bad_flags_exit_2_with_one_line(flag: str, message: str, tmp_path: Path) -> None:
    proc = _bench(flag, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
