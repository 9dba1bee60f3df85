"""Peer readiness before TensorFlow starts: real sockets on loopback, real name resolution."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from trainer.dev.emulator import free_port
from trainer.distribute.cluster import Cluster
from trainer.distribute.peers import probe, wait_for_peers
from trainer.errors import PeerLostError


def cluster(workers: list[str], index: int) -> Cluster:
    return Cluster(workers=tuple(workers), task_index=index)


def test_two_waiting_workers_find_each_other_through_their_listeners():
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    waited: dict[int, float] = {}
    done = threading.Event()

    def worker(i: int) -> None:
        waited[i] = wait_for_peers(cluster(workers, i), timeout_s=20)
        # Then TensorFlow binds the same port (which the listener must have released).
        with socket.create_server(("", int(workers[i].rsplit(":", 1)[1]))):
            done.wait(30)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    threads[0].start()
    time.sleep(1.5)  # worker 1's pod starts later
    threads[1].start()
    while len(waited) < 2 and any(t.is_alive() for t in threads):
        time.sleep(0.1)
    done.set()
    for t in threads:
        t.join(30)
    assert set(waited) == {0, 1}
    assert waited[0] >= 1.0 and waited[1] < 5


def test_a_peer_that_never_comes_is_named_after_the_bounded_wait():
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    with pytest.raises(PeerLostError) as caught:
        wait_for_peers(cluster(workers, 0), timeout_s=2)
    assert 2 <= time.monotonic() - started < 8
    message = str(caught.value)
    assert f"peer worker 1 ({workers[1]})" in message
    assert "does not accept connections" in message and "\n" not in message


def test_a_name_that_does_not_resolve_is_said_so():
    assert "does not resolve" in probe("train-abc-1.streamtrain-workers.invalid:2222")
    with socket.create_server(("127.0.0.1", 0)) as s:
        assert probe(f"127.0.0.1:{s.getsockname()[1]}") is None


def test_single_worker_does_not_wait():
    assert wait_for_peers(Cluster(), timeout_s=0.001) == 0.0
