"""One trainer per --output: a lease the chief holds for the whole run.

* local --output: ``OUTPUT/.streamtrain-lease``, locked with fcntl.flock. The kernel drops the
  lock when the process ends, however it ends, so a killed run never blocks its restart.
* gs:// --output: the object ``OUTPUT/.streamtrain-lease``, created only if absent
  (ifGenerationMatch=0), rewritten every `renew_s` by a daemon thread with the generation it
  last wrote, and deleted with that generation when the run ends. A holder that stopped
  renewing for `ttl_s` (a preempted pod never released it) is stale and is taken over with a
  write conditioned on the stale generation, so of two restarts only one wins. Two holders are
  the same run, and the newer takes over at once, when they carry the same Job name
  (TRAINER_JOB_NAME: a Job's replacement pod after preemption), or the same host and a pid
  that no longer runs (a local process killed with SIGKILL).

    lease = OutputLease(outputs.root, storage=storage, job_name=config.job_name)
    lease.acquire()          # ConfigError (exit 2) naming the holder when another run has it
    try: ... finally: lease.release()
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from trainer.data import storage as storage_lib
from trainer.data.storage import Storage
from trainer.errors import ConfigError

logger = logging.getLogger(__name__)

LEASE = ".streamtrain-lease"
RENEW_S = 30.0
TTL_S = 3 * RENEW_S


def describe(holder: dict[str, Any]) -> str:
    """A holder as the refusal names it: job, host, pid and start time."""
    parts = [f"job {holder['job']}"] if holder.get("job") else []
    parts += [
        f"host {holder.get('host', '?')}",
        f"pid {holder.get('pid', '?')}",
        f"started {holder.get('started', '?')}",
    ]
    return ", ".join(parts)


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class OutputLease:
    """The lease on one --output; see the module docstring."""

    def __init__(
        self,
        output: str,
        *,
        storage: Storage,
        job_name: str | None = None,
        renew_s: float = RENEW_S,
        ttl_s: float = TTL_S,
    ) -> None:
        self.uri = storage_lib.join(output, LEASE)
        self.output = output
        self.storage = storage
        self.renew_s, self.ttl_s = renew_s, ttl_s
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.holder = {
            "job": job_name or "",
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started": started,
            "token": uuid.uuid4().hex,
        }
        self._fd: int | None = None
        self._generation: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refuse(self, holder: dict[str, Any], extra: str = "") -> ConfigError:
        return ConfigError(
            f"--output {self.output}: another trainer is writing there ({describe(holder)}"
            f"{extra}); wait for it to end, stop it, or use another --output"
        )

    # --- local ------------------------------------------------------------------------------

    def _acquire_local(self) -> None:
        os.makedirs(self.output, exist_ok=True)
        fd = os.open(self.uri, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd, "rb") as f:
                text = f.read()
            try:
                holder = json.loads(text)
            except ValueError:
                holder = {}
            raise self._refuse(holder) from None
        except OSError as e:
            # A file system without locks (some FUSE mounts): run unguarded rather than not.
            os.close(fd)
            logger.warning(
                "%s: cannot lock (%s); not guarding against a second trainer", self.uri, e
            )
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode(), 0)
        self._fd = fd

    # --- gs:// ------------------------------------------------------------------------------

    def _write(self, generation: int) -> int | None:
        body = json.dumps(self.holder).encode()
        return self.storage.write_if_generation(
            self.uri, body, generation=generation, metadata=self.holder
        )

    def _mine(self) -> int | None:
        """The lease's generation when this process holds it (a write whose answer was lost)."""
        found = self.storage.stat_generation(self.uri)
        if found is not None and found[1].get("token") == self.holder["token"]:
            return found[0]
        return None

    def _acquire_gcs(self) -> None:
        for _ in range(3):  # a lease that vanishes or changes while we look: look again
            generation = self._write(0)
            if generation is not None:
                self._generation = generation
                break
            found = self.storage.stat_generation(self.uri)
            if found is None:
                continue
            current, holder, written = found
            if holder.get("token") == self.holder["token"]:
                self._generation = current
                break
            age = time.time() - written
            same_job = bool(self.holder["job"]) and holder.get("job") == self.holder["job"]
            dead = holder.get("host") == self.holder["host"] and not _pid_alive(
                holder.get("pid", "")
            )
            if not (same_job or dead or age > self.ttl_s):
                raise self._refuse(
                    holder, f"; renewed {age:.0f}s ago, stale after {self.ttl_s:.0f}s"
                )
            why = "same job" if same_job else "its process is gone" if dead else "stale"
            generation = self._write(current)
            if generation is not None:
                logger.info("took over the lease of --output from %s (%s)", describe(holder), why)
                self._generation = generation
                break
        else:
            raise self._refuse(
                (self.storage.stat_generation(self.uri) or (0, {}, 0))[1], "; contended"
            )
        self._thread = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            with self._lock:
                if self._generation is None:
                    return
                try:
                    generation = self._write(self._generation) or self._mine()
                except Exception as e:  # a missed renewal is retried next time
                    logger.warning("%s: renewing the lease failed (%s)", self.uri, e)
                    continue
                if generation is None:
                    found = self.storage.stat_generation(self.uri)
                    logger.error(
                        "%s: the lease was taken over by %s; this run no longer holds --output",
                        self.uri,
                        describe(found[1]) if found else "nobody (deleted)",
                    )
                self._generation = generation

    # --- both -------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Takes the lease, or raises ConfigError (exit 2) naming the trainer that holds it."""
        if storage_lib.is_gcs(self.output):
            self._acquire_gcs()
        else:
            self._acquire_local()

    def release(self) -> None:
        """Gives the lease up (a no-op when not held)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 5)
        with self._lock:
            generation, self._generation = self._generation, None
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # unlocks
        if generation is not None:
            with contextlib.suppress(Exception):
                self.storage.delete_if_generation(self.uri, generation=generation)

    def __enter__(self) -> OutputLease:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
