"""`DecodePool`: decoding in worker processes, pixels returned through shared memory.

    pool = DecodePool(2, size=(224, 224), dtype="uint8")
    pixels = pool.decode(blob)                               # one image, (224, 224, 3)
    errors = pool.run([FileRange(path, 512, 9000, crc)], x, rows=[3])  # straight into x[3]
    pool.close()

Threads decode in C without the GIL, but the Python around each image (headers, EXIF, resize
choice, array handling) runs under one lock; processes take all of it off the trainer's GIL.
Each process has `lanes` (2) of `rows` output rows and an input area (`inbox_mb`) in one
memfd: anonymous memory with no name in /dev/shm, so nothing outlives the processes that map
it, whatever killed them. With two lanes the next request waits in the socket while a process
decodes, so it never idles while the trainer copies rows out. A worker sees end of file on its
socket when the trainer dies, even by SIGKILL, and exits. A worker that dies is restarted; the
images it held are retried one at a time with nothing else in flight, and one that kills a
fresh worker twice is reported as `ImageDecodeError("crashed", ...)`, for the corrupt-sample
policy.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection

import numpy as np

from trainer.data.counters import Counters
from trainer.data.decode import ImageDecodeError
from trainer.errors import DataError, StorageNotFoundError, StoragePermissionError

logger = logging.getLogger(__name__)

WORKER_MODULE = "trainer.data.decode_worker"


@dataclasses.dataclass(frozen=True)
class FileRange:
    """`size` bytes at `offset` of a local file (-1: all of it), checked against `crc32c`
    (None: unchecked)."""

    path: str
    offset: int
    size: int
    crc32c: int | None = None


Item = bytes | FileRange


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's
    limit), which os.cpu_count() does not see."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, int(quota) // int(period)))


class _WorkerDied(Exception):
    pass


class _Worker:
    """One decode process and the parent's end of its socket; its replies come in the order
    the requests were sent, so each waits for its turn to read."""

    def __init__(
        self, command: Sequence[str], options: dict, memfd: int, inboxes: list[memoryview]
    ) -> None:
        self.inboxes = inboxes  # per lane, the input area bytes items are copied to
        self._send_lock = threading.Lock()
        self._turn = threading.Condition()
        self._sent = self._answered = 0
        self._dead = False
        parent, child = socket.socketpair()
        options = {**options, "socket": child.fileno(), "memory": memfd}
        self.process = subprocess.Popen(
            [*command, json.dumps(options)],
            pass_fds=(child.fileno(), memfd),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())

    def request(self, lane: int, items: Sequence[Item]) -> dict:
        header, inline, used, inbox = [], [], 0, self.inboxes[lane]
        for item in items:
            if isinstance(item, FileRange):
                header.append(["f", item.path, item.offset, item.size, _crc(item)])
            elif used + len(item) <= len(inbox):
                # One copy into shared memory: a socket costs far more for large images.
                inbox[used : used + len(item)] = item
                header.append(["m", used, len(item)])
                used += len(item)
            else:
                header.append(["b"])
                inline.append(item)
        with self._send_lock:
            ticket, self._sent = self._sent, self._sent + 1
            try:
                self.conn.send_bytes(json.dumps({"lane": lane, "items": header}).encode())
                for item in inline:
                    self.conn.send_bytes(item)
            except OSError:
                sent = False
            else:
                sent = True
        with self._turn:
            while self._answered != ticket and not self._dead:
                self._turn.wait()
            try:
                if sent and not self._dead:
                    with contextlib.suppress(EOFError, OSError):
                        return json.loads(self.conn.recv_bytes())
                self._dead = True  # every request still waiting on this process fails too
                raise _WorkerDied
            finally:
                self._answered += 1
                self._turn.notify_all()

    def exit_reason(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        self.conn.close()  # end of file: the worker returns from its loop
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# What a worker reports for a file it cannot read, as the Storage would raise it.
FILE_ERRORS = {
    "not_found": StorageNotFoundError,
    "permission_denied": StoragePermissionError,
    "os_error": DataError,
}


def _error(reason: str, message: str) -> Exception:
    kind = FILE_ERRORS.get(reason)
    return kind(message) if kind else ImageDecodeError(reason, message)


def _crc(item: FileRange) -> int:
    return -1 if item.crc32c is None else int(item.crc32c)


class DecodePool:
    """`processes` decode workers sharing one memfd of output rows; thread-safe."""

    def __init__(
        self,
        processes: int,
        *,
        size: tuple[int, int],
        dtype: str = "uint8",
        max_pixels: int = 89_478_485,
        resize: str = "squash",
        rows: int = 16,
        lanes: int = 2,
        inbox_mb: int = 8,
        command: Sequence[str] | None = None,
        counters: Counters | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        height, width = size
        self.rows = rows
        self._shape = (processes, lanes, rows, height, width, 3)
        self._command = list(command or (sys.executable, "-m", WORKER_MODULE))
        self._options = dict(
            height=height, width=width, dtype=dtype, max_pixels=max_pixels, resize=resize
        )
        out_bytes = int(np.prod(self._shape)) * np.dtype(dtype).itemsize
        inbox = inbox_mb << 20
        self._options.update(rows=rows, lanes=lanes, inbox_offset=out_bytes, inbox_bytes=inbox)
        nbytes = out_bytes + processes * lanes * inbox
        # Pages are allocated when first written: an inbox costs what its largest image needs.
        self._memfd = os.memfd_create("streamtrain-decode", os.MFD_CLOEXEC)
        os.ftruncate(self._memfd, nbytes)
        self._memory = mmap.mmap(self._memfd, nbytes)
        self._out = np.ndarray(self._shape, dtype, buffer=self._memory)
        areas = [
            memoryview(self._memory)[out_bytes + k * inbox : out_bytes + (k + 1) * inbox]
            for k in range(processes * lanes)
        ]
        self._inboxes = [areas[k * lanes : (k + 1) * lanes] for k in range(processes)]
        self._lock = threading.Lock()
        # Requests, and retries after a death that run with nothing else in flight.
        self._gate = threading.Condition()
        self._active = self._solo = 0
        # Idle (process, lane) pairs, lane 0 of every process first: spread over processes.
        self._idle = collections.deque((s, k) for k in range(lanes) for s in range(processes))
        self._idle_changed = threading.Condition()
        self._urgent_waiting = 0
        self._workers = [self._start(slot) for slot in range(processes)]
        self.counters = counters if counters is not None else Counters()

    @property
    def processes(self) -> int:
        return len(self._workers)

    @property
    def restarts(self) -> int:
        """Decode processes restarted after dying."""
        return int(self.counters.get("decoder_restarts"))

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if w is not None]

    def check_matches(self, *, size: tuple[int, int], **options: object) -> None:
        """Raise ValueError unless this pool decodes to `size` with these decode options."""
        wanted = {"height": size[0], "width": size[1], **options}
        mine = {k: self._options[k] for k in wanted}
        if mine != wanted:
            raise ValueError(f"the decode pool decodes with {mine}, not {wanted}")

    def decode(self, data: bytes, *, urgent: bool = False) -> np.ndarray:
        """One image's pixels (a copy); raises ImageDecodeError."""
        out = np.empty(self._shape[3:], self._options["dtype"])
        errors = self.run([data], out[None], rows=[0], urgent=urgent)
        if errors:
            raise errors[0]
        return out

    def run(
        self, items: Sequence[Item], out: np.ndarray, rows: Sequence[int], *, urgent: bool = False
    ) -> dict[int, Exception]:
        """Decode `items[k]` into `out[rows[k]]`; the failures, by k (their rows are left as is):
        ImageDecodeError, or for a file the error the Storage would raise. `urgent` requests
        (evaluation, which the step waits for) are sent before any other waiting one."""
        errors: dict[int, Exception] = {}
        for start in range(0, len(items), self.rows):
            part, part_rows = items[start : start + self.rows], rows[start : start + self.rows]
            for k, error in self._run_part(part, out, part_rows, urgent=urgent).items():
                errors[start + k] = error
        return errors

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            if worker is not None:
                worker.stop()
        if self._memory is not None:
            self._out = None
            for views in self._inboxes:
                for view in views:
                    view.release()
            # A caller's view still alive keeps the mapping; it goes with the last reference.
            with contextlib.suppress(BufferError):
                self._memory.close()
            os.close(self._memfd)
            self._memory = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, slot: int) -> _Worker:
        options = {**self._options, "slot": slot}
        return _Worker(self._command, options, self._memfd, self._inboxes[slot])

    @contextlib.contextmanager
    def _gated(self, solo: bool) -> Iterator[None]:
        """Enter as one of many requests, or `solo`: alone, once those in flight are done."""
        with self._gate:
            if solo:
                self._solo += 1
                while self._active:
                    self._gate.wait()
            else:
                while self._solo:
                    self._gate.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._gate:
                self._active -= 1
                self._solo -= solo
                self._gate.notify_all()

    def _take_idle(self, urgent: bool) -> tuple[int, int]:
        with self._idle_changed:
            self._urgent_waiting += urgent
            try:
                while not self._idle or (self._urgent_waiting and not urgent):
                    self._idle_changed.wait()
                return self._idle.popleft()
            finally:
                self._urgent_waiting -= urgent

    def _put_idle(self, pair: tuple[int, int]) -> None:
        with self._idle_changed:
            self._idle.append(pair)
            self._idle_changed.notify_all()

    def _run_part(
        self,
        items: Sequence[Item],
        out: np.ndarray,
        rows: Sequence[int],
        retry: bool = True,
        solo: bool = False,
        urgent: bool = False,
    ) -> dict[int, Exception]:
        with self._gated(solo):
            slot, lane = self._take_idle(urgent)
            try:
                with self._lock:
                    worker = self._workers[slot] if self._workers else None
                if worker is None:
                    raise RuntimeError("the decode pool is closed")
                try:
                    reply = worker.request(lane, items)
                except _WorkerDied:
                    reply = None
                    reason = worker.exit_reason()
                    with self._lock:  # the other lane's request saw the same death
                        restart = bool(self._workers) and self._workers[slot] is worker
                        if restart:
                            self._workers[slot] = self._start(slot)
                    if restart:
                        self.counters.add("decoder_restarts")
                        logger.warning("a decode process died (%s); restarted", reason)
                else:
                    failed = {k: _error(r, m) for k, r, m in reply["errors"]}
                    first, n, done = int(rows[0]), len(items), self._out[slot, lane]
                    if not failed and list(rows) == list(range(first, first + n)):
                        out[first : first + n] = done[:n]  # one copy, no gather
                    else:
                        ok = [k for k in range(n) if k not in failed]
                        out[[rows[k] for k in ok]] = done[ok]
                    self.counters.add("decode_seconds", reply["seconds"])
            finally:
                self._put_idle((slot, lane))
        if reply is None:  # out of the gate: the retries run alone
            return self._after_death(items, out, rows, retry, reason)
        return failed

    def _after_death(
        self, items: Sequence[Item], out: np.ndarray, rows: Sequence[int], retry: bool, reason: str
    ) -> dict[int, Exception]:
        """Retry what a dead worker held one image at a time; an image that kills twice fails."""
        if len(items) == 1 and not retry:
            return {0: ImageDecodeError("crashed", f"the decode process died on it ({reason})")}
        errors = {}
        for k, item in enumerate(items):
            again = self._run_part([item], out, [rows[k]], retry=len(items) > 1, solo=True)
            for error in again.values():
                errors[k] = error
        return errors
