"""Waits, before TensorFlow starts, until every peer of a multi-worker cluster is reachable.

Indexed Job pods start minutes apart and a pod's DNS name appears only once it has an address
(kubernetes#117819); TensorFlow fails on a name that does not resolve yet. Each worker
therefore listens on its own worker port while it waits for the others: a peer that is waiting
too accepts the connection, and one already inside TensorFlow accepts it on the same port.

    wait_for_peers(cluster, timeout_s=600)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

from trainer.distribute.cluster import Cluster
from trainer.errors import PeerLostError

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 2.0
_RETRY_S = 1.0
_LOG_EVERY_S = 30.0


def split_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port); IPv6 hosts come in brackets."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def probe(address: str) -> str | None:
    """None when `address` resolves and accepts a TCP connection, else why not."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"its name does not resolve ({e.strerror})"
    last = "no address"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(_CONNECT_TIMEOUT_S)
            try:
                s.connect(sockaddr)
                return None
            except OSError as e:
                last = f"{sockaddr[0]} does not accept connections ({e.strerror or e})"
    return last


class _Listener:
    """Accepts and drops connections on this worker's port until closed."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_server(("", port), backlog=64)
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="peer-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._sock.close()


def _listen(port: int) -> _Listener | None:
    try:
        return _Listener(port)
    except OSError as e:
        # Bound already (a restart whose port is still held): peers can still probe the rest.
        logger.info("peer check: not listening on port %d while waiting (%s)", port, e.strerror)
        return None


def wait_for_peers(
    cluster: Cluster,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Returns the seconds waited once every peer is reachable; PeerLostError past `timeout_s`."""
    if not cluster.is_multi_worker:
        return 0.0
    me = cluster.task_index
    peers = {i: a for i, a in enumerate(cluster.workers) if i != me}
    listener = _listen(split_address(cluster.workers[me])[1])
    started = clock()
    last_log: float | None = None
    try:
        while True:
            missing = {i: why for i, a in peers.items() if (why := probe(a)) is not None}
            waited = clock() - started
            if not missing:
                logger.info(
                    "peers: all %d other worker(s) reachable after %.0f s", len(peers), waited
                )
                return waited
            first, why = next(iter(missing.items()))
            if waited >= timeout_s:
                raise PeerLostError(
                    f"worker {me}: peer worker {first} ({peers[first]}) not reachable after "
                    f"{waited:.0f} s (--peer-wait-s): {why}; check that its pod is running, "
                    "then restart the job"
                )
            if last_log is None or clock() - last_log >= _LOG_EVERY_S:
                last_log = clock()
                logger.info(
                    "peers: waiting for %d of %d worker(s) (%.0f of %.0f s): worker %d (%s): %s",
                    len(missing),
                    len(peers),
                    waited,
                    timeout_s,
                    first,
                    peers[first],
                    why,
                )
            sleep(_RETRY_S)
    finally:
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
