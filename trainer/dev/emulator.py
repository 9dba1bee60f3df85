"""A local gcp-storage-emulator process on loopback, for `make demo`, tests and benchmarks.

    with Emulator() as emulator:                 # in memory, free port
        os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
        ...

`Emulator(data_dir=...)` keeps the objects on disk instead, so several emulator processes can
serve the same objects (the emulator answers one request at a time).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_command() -> str:
    # The console script is installed beside the interpreter (.venv/bin).
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    found = str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")
    if not found:
        raise RuntimeError("gcp-storage-emulator is not installed: run `make install`")
    return found


class Emulator:
    """One emulator subprocess; `url` is its base URL once started."""

    def __init__(
        self, *, data_dir: str | None = None, port: int | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self.log_path = ""
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Emulator:
        # --data-dir is an option of the program, not of `start`.
        command = [emulator_command()]
        command += [f"--data-dir={self.data_dir}"] if self.data_dir else []
        command += ["start", "--host=127.0.0.1", f"--port={self.port}", "--quiet"]
        command += [] if self.data_dir else ["--in-memory"]
        env = {k: v for k, v in os.environ.items() if k != EMULATOR_ENV}
        fd, self.log_path = tempfile.mkstemp(prefix="gcs-emulator-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"gcp-storage-emulator exited with {self._proc.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url, timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"gcp-storage-emulator did not answer on {self.url} within "
                    f"{self.start_timeout_s:.0f} s; see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
