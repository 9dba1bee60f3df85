"""Run the trainer CLI as a subprocess, with `STREAMTRAIN_FAULT` faults when a test sets it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    code: int
    log: str
    seconds: float

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log.splitlines() if re.search(pattern, line)]

    def error_lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("error:")]


TESTS = Path(__file__).resolve().parents[1]


def command(*args: str) -> list[str]:
    # `timeout -k`: TF ignores SIGTERM while it waits for a multi-worker peer.
    entry = str(TESTS / "support" / "with_faults.py")
    return ["timeout", "-k", "10", "300", sys.executable, entry, "train", *args]


def environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with tests/ importable (for `python -m support.bench`)."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run(*args: str, env: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        command(*args), capture_output=True, text=True, check=False, env=environ(env)
    )
    return Run(proc.returncode, proc.stderr, time.monotonic() - started)


def tagged_processes(tag: str, *, wait: float = 0) -> list[int]:
    """Live processes whose environment holds TEST_TAG=`tag` (a run's children inherit it),
    after waiting up to `wait` seconds for them to go."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                tagged = f"TEST_TAG={tag}".encode() in (proc / "environ").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if tagged and state != "Z":
                found.append(int(proc.name))
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def metrics(output: Path) -> dict:
    return json.loads((output / "metrics.json").read_text())


def run_until_done(
    *args: str, first_env: dict[str, str], restarts: int = 3, env: dict[str, str] | None = None
) -> list[Run]:
    """Runs once with `first_env` (the fault), then restarts without it until exit 0."""
    runs = [run(*args, env={**(env or {}), **first_env})]
    while runs[-1].code != 0 and len(runs) <= restarts:
        runs.append(run(*args, env=env))
    return runs
