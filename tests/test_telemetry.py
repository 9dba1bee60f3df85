"""Live metrics: prometheus-client on --metrics-port, scraped by a real Prometheus."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.prometheus import Prometheus
from support.trainer_runs import run

from trainer.data.counters import Counters
from trainer.dev.emulator import free_port
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import ConfigError
from trainer.train.telemetry import Telemetry


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_metrics_follow_the_steps_and_read_the_pipeline_counters():
    counters = Counters()
    telemetry = Telemetry(counters, worker=1, total_steps=100, start_step=40)
    port = free_port()
    telemetry.serve(port)
    try:
        assert scrape(port)["streamtrain_step"] == 40
        counters.add("skipped", 3)
        counters.add("retries", 2)
        counters.add("objects_fetched", 7)
        counters.add("decoder_restarts")
        telemetry.steps_done(step=50, epoch=2, samples=320, steps=10)
        got = scrape(port)
        assert got["streamtrain_step"] == 50 and got["streamtrain_epoch"] == 3
        assert got["streamtrain_samples_total"] == 320
        assert got["streamtrain_step_seconds_count"] == 10
        assert got["streamtrain_images_per_second"] > 0
        assert got["streamtrain_eta_seconds"] > 0
        assert got["streamtrain_worker"] == 1
        assert got["streamtrain_quarantined_objects_total"] == 3
        assert got["streamtrain_storage_retries_total"] == 2
        assert got["streamtrain_storage_reads_total"] == 7
        assert got["streamtrain_decode_process_restarts_total"] == 1
    finally:
        telemetry.close()


def test_a_port_in_use_is_a_one_line_config_error():
    with socket.create_server(("", 0)) as taken:
        telemetry = Telemetry(Counters(), worker=0, total_steps=1, start_step=0)
        with pytest.raises(ConfigError, match=r"--metrics-port .*cannot listen"):
            telemetry.serve(taken.getsockname()[1])


def test_prometheus_scrapes_a_real_training_run(tmp_path, gcs_bucket, gcs_upload_tree):
    local = tmp_path / "data"
    write_learnable_dataset(str(local), classes=2, per_class=12, min_size=16, max_size=32, seed=2)
    data = f"gs://{gcs_bucket}/data"
    gcs_upload_tree(str(local), data)
    port = free_port()
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
    try:
        result = run(
            "--data", data, "--output", str(tmp_path / "out"), "--epochs", "2",
            "--batch-size", "4", "--image-size", "16", "--model", "linear",
            "--metrics-port", str(port), "--log-every", "1",
            env={"STREAMTRAIN_FAULT": "slow@0.25"},
        )  # fmt: skip
        assert result.code == 0, result.log[-3000:]
        steps = prometheus.value('max_over_time(streamtrain_step{job="streamtrain"}[10m])')
        assert steps is not None and steps >= 8, prometheus.query("up")
        assert prometheus.value("max_over_time(streamtrain_eta_seconds[10m])") > 0
        assert prometheus.value("max_over_time(streamtrain_images_per_second[10m])") > 0
        assert prometheus.value("max_over_time(streamtrain_samples_total[10m])") >= 32
        # 24 objects read at least once over HTTP from the emulator.
        assert prometheus.value("max_over_time(streamtrain_storage_reads_total[10m])") >= 24
        assert prometheus.value("max_over_time(up[10m])") == 1
    finally:
        prometheus.close()
