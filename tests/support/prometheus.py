"""A real Prometheus server (Debian's `prometheus` package) scraping given targets, for tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from trainer.dev.emulator import free_port


class Prometheus:
    """`prometheus` on a loopback port with its own storage folder, scraping every 0.5 s."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run `make tools` (Debian's package)"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        scrape = {
            "job_name": "streamtrain",
            "scrape_interval": "500ms",
            "scrape_timeout": "400ms",
            "static_configs": [{"targets": targets}],
        }
        config.write_text(json.dumps({"scrape_configs": [scrape]}))  # JSON is YAML
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise AssertionError(f"prometheus did not become ready: {(folder / 'prometheus.log')}")

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
