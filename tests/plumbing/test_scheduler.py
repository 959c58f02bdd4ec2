"""The one scheduler loop: readable pollables and due deadlines step their task, under
both waiters (select.poll with in-memory channels, zmq.Poller with ZeroMQ sockets)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import zmq
from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.plumbing.scheduler import (
    Now,
    PollWaiter,
    SystemClockReader,
    Waiter,
    ZmqWaiter,
    run,
)

MS = 1_000_000


class Recorder:
    """A task that waits on `items`, records each step and stops the loop after `limit`."""

    def __init__(self, name: str, items: Sequence[Any], deadline_ns: int | None,
                 on_step: Callable[[], None] = lambda: None) -> None:
        self.name, self.items, self.deadline = name, list(items), deadline_ns
        self.steps: list[int] = []
        self._on_step = on_step

    def pollables(self) -> Sequence[Any]:
        return self.items

    def next_deadline_ns(self) -> int | None:
        return self.deadline

    def step(self, now: Now) -> None:
        self.steps.append(now.mono_ns)
        self._on_step()


def _run(tasks: Sequence[Recorder], waiter: Callable[[], Waiter], until: Callable[[], bool],
         max_passes: int = 200) -> None:
    passes = 0

    def stop() -> bool:
        nonlocal passes
        passes += 1
        return until() or passes > max_passes

    run(tasks, SystemClockReader(), stop, waiter)
    assert passes <= max_passes, "the loop never got what the test waited for"


def test_a_queued_frame_on_an_in_memory_channel_steps_its_task_without_a_wait() -> None:
    hub = MemoryHub()
    router = hub.router("bus")
    dealer = hub.dealer("bus", b"w")
    assert dealer.send(b"hello")
    reader = Recorder("reader", [router], None, on_step=lambda: router.recv())
    idle = Recorder("idle", [], None)
    _run([reader, idle], PollWaiter, until=lambda: bool(reader.steps))
    assert reader.steps and not idle.steps  # only the task whose channel had a frame


@pytest.mark.parametrize("waiter", [PollWaiter, ZmqWaiter], ids=["poll", "zmq"])
def test_a_readable_fd_steps_its_owner_and_a_due_deadline_steps_its_task(
        waiter: Callable[[], Waiter]) -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(w, b"x")
        fd_task = Recorder("fd", [r], None, on_step=lambda: os.read(r, 16))
        now = SystemClockReader().now().mono_ns
        timer = Recorder("timer", [], now + 5 * MS)
        never = Recorder("never", [], None)
        _run([fd_task, timer, never], waiter,
             until=lambda: bool(fd_task.steps) and bool(timer.steps))
        assert fd_task.steps and timer.steps and not never.steps
        assert timer.steps[0] >= now + 5 * MS  # not before its deadline
    finally:
        os.close(r)
        os.close(w)


def test_a_zeromq_socket_that_has_a_message_steps_its_task() -> None:
    ctx = zmq.Context()
    try:
        a = ctx.socket(zmq.PAIR)
        b = ctx.socket(zmq.PAIR)
        a.bind("inproc://scheduler-test")
        b.connect("inproc://scheduler-test")
        b.send(b"frame")
        got: list[bytes] = []
        task = Recorder("zmq", [a], None, on_step=lambda: got.append(a.recv()))
        _run([task], ZmqWaiter, until=lambda: bool(got))
        assert got == [b"frame"]
        a.close(linger=0)
        b.close(linger=0)
    finally:
        ctx.term()


def test_a_pollable_shared_by_two_tasks_wakes_both() -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(w, b"x")
        first = Recorder("first", [r], None)
        second = Recorder("second", [r], None, on_step=lambda: os.read(r, 16))
        _run([first, second], PollWaiter, until=lambda: bool(second.steps))
        assert first.steps and second.steps
    finally:
        os.close(r)
        os.close(w)
