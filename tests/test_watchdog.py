"""The stall watchdog on a test clock: when it fires, and what it says is stuck."""

from __future__ import annotations

import threading

from trainer.train.watchdog import Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, *, waiting=None, multi_worker=False, fired=None) -> Watchdog:
    return Watchdog(
        60,
        waiting_since=lambda: waiting[0] if waiting else None,
        multi_worker=multi_worker,
        log_format="text",
        on_stall=lambda message, fmt: fired.append(message) if fired is not None else None,
        clock=clock,
    )


def test_fires_only_past_the_limit_and_names_the_step():
    clock = Clock()
    dog = make(clock)
    clock.now += 10
    dog.mark("step", step=12)
    clock.now += 59
    assert dog.check() is None
    clock.now += 2
    message = dog.check()
    assert message.startswith("stalled: nothing finished for 61 s after step 12 (limit 60 s")
    assert "stuck in the step (computing on the device)" in message
    assert "restart the job, it resumes" in message and "\n" not in message


def test_the_limit_grows_to_five_times_the_slowest_step():
    clock = Clock()
    dog = make(clock)
    clock.now += 30  # a first step that compiles
    dog.mark("step", step=1)
    assert dog.limit() == 150
    clock.now += 100
    assert dog.check() is None
    clock.now += 51
    assert "limit 150 s" in dog.check()


def test_a_batch_that_does_not_come_is_waiting_for_input():
    clock = Clock()
    waiting = [None]
    dog = make(clock, waiting=waiting)
    dog.mark("step", step=3)
    clock.now += 5
    waiting[0] = clock.now  # the feed asked for the next batch and got nothing since
    clock.now += 60
    assert "stuck waiting for input (the step's batch" in dog.check()


def test_multi_worker_steps_may_wait_in_a_collective_and_phases_are_named():
    clock = Clock()
    dog = make(clock, multi_worker=True)
    clock.now += 61
    assert "in the step, or in a collective waiting for another worker" in dog.check()
    for doing, said in (
        ("checkpoint", "writing a checkpoint"),
        ("evaluation", "in the evaluation"),
    ):
        dog = make(clock)
        dog.mark(doing, step=8)
        clock.now += 61
        assert f"stuck {said};" in dog.check()


def test_the_thread_calls_on_stall_once_then_ends():
    fired: list[str] = []
    done = threading.Event()
    dog = Watchdog(
        0.3,
        waiting_since=lambda: None,
        multi_worker=False,
        log_format="text",
        on_stall=lambda message, fmt: (fired.append(message), done.set()),
    )
    dog.start()
    assert done.wait(5)
    dog.close()
    assert len(fired) == 1 and fired[0].startswith("stalled:")
