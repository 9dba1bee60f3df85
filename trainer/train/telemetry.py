"""Live training metrics for Prometheus, served on `--metrics-port` by `prometheus-client`.

The loop reports each chunk of steps; the input pipeline's counters are read at scrape time.
Every metric lives in this object's own registry, so two runs in one process do not clash.

    telemetry = Telemetry(counters, worker=0, total_steps=1000, start_step=0)
    telemetry.serve(9090)
    telemetry.steps_done(step=10, epoch=0, samples=320, steps=10)
    telemetry.close()
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from trainer.data.counters import Counters
from trainer.distribute.cluster import Cluster
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)

_WINDOW = 20  # chunks the rate, wait fraction and ETA are taken over

# Counters of the input pipeline (trainer.data.counters), as Prometheus counters.
_PIPELINE = (
    ("streamtrain_quarantined_objects_total", "objects skipped as unreadable", ("skipped",)),
    (
        "streamtrain_storage_reads_total",
        "objects and shards read from storage",
        ("objects_fetched", "shard_downloads"),
    ),
    ("streamtrain_storage_retries_total", "storage requests retried", ("retries",)),
    (
        "streamtrain_decode_process_restarts_total",
        "decode processes restarted",
        ("decoder_restarts",),
    ),
    (
        "streamtrain_cache_hits_total",
        "reads served by the object or shard cache",
        ("cache_hits", "shard_cache_hits"),
    ),
)


class _PipelineCollector(Collector):
    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        values = self._counters.snapshot()
        for name, doc, keys in _PIPELINE:
            family = CounterMetricFamily(name.removesuffix("_total"), doc)
            family.add_metric([], sum(values.get(k, 0) for k in keys))
            yield family


class Telemetry:
    """The process's training metrics; `serve` exposes them over HTTP."""

    def __init__(
        self, counters: Counters, *, worker: int, total_steps: int, start_step: int
    ) -> None:
        self.registry = CollectorRegistry()
        self.total_steps = total_steps
        r = self.registry
        self.step = Gauge("streamtrain_step", "global steps finished", registry=r)
        self.total = Gauge("streamtrain_total_steps", "global steps the run will take", registry=r)
        self.epoch = Gauge("streamtrain_epoch", "current epoch, from 1", registry=r)
        self.samples = Counter(
            "streamtrain_samples", "training samples this worker fed in this process", registry=r
        )
        self.rate = Gauge(
            "streamtrain_images_per_second", "this worker's recent images/s", registry=r
        )
        self.wait = Gauge(
            "streamtrain_data_wait_fraction", "recent share of time waiting for input", registry=r
        )
        self.eta = Gauge("streamtrain_eta_seconds", "time left at the recent step rate", registry=r)
        self.step_time = Histogram(
            "streamtrain_step_seconds",
            "wall time per step (a chunk's time over its steps)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.last_step = Gauge(
            "streamtrain_last_step_timestamp_seconds", "when the last step finished", registry=r
        )
        Gauge("streamtrain_worker", "this process's worker index", registry=r).set(worker)
        r.register(_PipelineCollector(counters))
        self.total.set(total_steps)
        self.step.set(start_step)
        self.epoch.set(0)
        self._counters = counters
        # (time, global step, samples so far, seconds waited for input) of recent chunks.
        self._recent: collections.deque = collections.deque(maxlen=_WINDOW)
        self._recent.append((time.perf_counter(), start_step, 0.0, counters.get("wait_seconds")))
        self._samples = 0.0
        self._server = None

    def serve(self, port: int) -> None:
        """Serves /metrics on every interface at `port`."""
        try:
            self._server, _ = start_http_server(port, registry=self.registry)
        except OSError as e:
            raise ConfigError(
                f"--metrics-port (TRAINER_METRICS_PORT) {port}: cannot listen ({e.strerror}); "
                "pick a free port"
            ) from None
        logger.info("metrics: Prometheus metrics on port %d at /metrics", port)

    def steps_done(self, *, step: int, epoch: int, samples: float, steps: int) -> None:
        """Records a chunk of `steps` steps, `samples` images, that ended at global `step`."""
        now, waited = time.perf_counter(), self._counters.get("wait_seconds")
        t0, step0, samples0, waited0 = self._recent[0]
        before = self._recent[-1][0]
        self._samples += samples
        self._recent.append((now, step, self._samples, waited))
        elapsed = max(now - t0, 1e-9)
        self.step.set(step)
        self.epoch.set(epoch + 1)
        self.samples.inc(samples)
        self.rate.set((self._samples - samples0) / elapsed)
        self.wait.set(min(1.0, (waited - waited0) / elapsed))
        per_step = elapsed / max(step - step0, 1)
        self.eta.set(per_step * max(self.total_steps - step, 0))
        for _ in range(steps):
            self.step_time.observe((now - before) / max(steps, 1))
        self.last_step.set(time.time())

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_telemetry(
    config: Any, counters: Counters, cluster: Cluster, *, total_steps: int, step: int
) -> Telemetry | None:
    """Prometheus metrics on --metrics-port, when set."""
    if config.metrics_port is None:
        return None
    telemetry = Telemetry(
        counters, worker=cluster.task_index, total_steps=total_steps, start_step=step
    )
    telemetry.serve(config.metrics_port)
    return telemetry
