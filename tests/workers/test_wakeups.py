"""Periodic messages ride along with other wake-ups, and signals wake an idle loop."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.ipc.framing import decode
from ntpd_py.ipc.link import Link, socketpair
from ntpd_py.ipc.messages import HEARTBEAT_INTERVAL_NS, Heartbeat, MsgType, SourceStatus
from ntpd_py.plumbing.scheduler import Now, SystemClockReader, run_poll, run_zmq
from ntpd_py.workers.base import RIDE_ALONG_NS, STATUS_INTERVAL_NS, WorkerBase

S = 1_000_000_000


def _status() -> SourceStatus:
    return SourceStatus(source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0",
                        state="running", poll_log2=0)


def _worker() -> tuple[WorkerBase, Link, Any]:
    ours, theirs = socketpair()
    hub = MemoryHub()
    cc = hub.router("bus")
    worker = WorkerBase("ptp:/dev/ptp0", hub.dealer("bus", b"ptp:/dev/ptp0"),
                        Link(ours, set()), logging.getLogger("t"))
    return worker, Link(theirs, {MsgType.HEARTBEAT}), cc


def _heartbeats(supervisor: Link) -> int:
    count = 0
    while (item := supervisor.recv()) is not None:
        assert isinstance(item[0], Heartbeat)
        count += 1
    return count


def _statuses(cc: Any) -> int:
    count = 0
    while (item := cc.recv()) is not None:
        assert isinstance(decode(item[1]), SourceStatus)
        count += 1
    return count


def test_heartbeat_and_status_go_out_with_a_wake_up_near_their_deadline() -> None:
    worker, supervisor, cc = _worker()
    t0 = 1000 * S
    worker.housekeeping(Now(t0, 0), _status)  # both are due at once at start
    assert (_heartbeats(supervisor), _statuses(cc)) == (1, 1)
    # a wake-up (say, a PHC sample) well before the deadline sends nothing
    early = t0 + HEARTBEAT_INTERVAL_NS - RIDE_ALONG_NS - S // 10
    worker.housekeeping(Now(early, 0), _status)
    assert (_heartbeats(supervisor), _statuses(cc)) == (0, 0)
    # one within RIDE_ALONG_NS of the deadline carries the heartbeat, so the worker
    # never has to wake for it while it samples every second
    near = t0 + HEARTBEAT_INTERVAL_NS - RIDE_ALONG_NS + S // 10
    worker.housekeeping(Now(near, 0), _status)
    assert (_heartbeats(supervisor), _statuses(cc)) == (1, 0)
    assert worker.base_deadline() == near + HEARTBEAT_INTERVAL_NS
    # the status (every other heartbeat or so) rides along the same way, here together
    # with the next heartbeat
    second = t0 + STATUS_INTERVAL_NS - RIDE_ALONG_NS + S // 10
    worker.housekeeping(Now(second, 0), _status)
    assert (_heartbeats(supervisor), _statuses(cc)) == (1, 1)


def test_status_now_sends_at_the_next_step() -> None:
    worker, supervisor, cc = _worker()
    worker.housekeeping(Now(S, 0), _status)
    assert (_heartbeats(supervisor), _statuses(cc)) == (1, 1)
    worker.status_now()
    worker.housekeeping(Now(S + S // 10, 0), _status)
    assert (_heartbeats(supervisor), _statuses(cc)) == (0, 1)


class _Idle:
    """A task with nothing to wait on and no deadline: only a signal can end its wait."""

    name = "idle"

    def __init__(self) -> None:
        self.steps = 0

    def pollables(self) -> Sequence[Any]:
        return []

    def next_deadline_ns(self) -> int | None:
        return None

    def step(self, now: Now) -> None:
        self.steps += 1


def _stop_by_signal(runner: Any) -> tuple[float, int]:
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR1, lambda *_: stop.set())
    task = _Idle()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    began = time.monotonic()
    timer.start()
    try:
        runner([task], SystemClockReader(), stop.is_set)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    return time.monotonic() - began, task.steps


def test_a_signal_wakes_an_idle_zmq_loop() -> None:
    # The loops no longer wake every second to look at their stop flag: the wait is
    # capped at 30 s, so returning at all well before that means the signal woke it.
    elapsed, steps = _stop_by_signal(run_zmq)
    assert elapsed < 15, elapsed
    assert steps == 0  # woken by the signal, not by a deadline


def test_a_signal_wakes_an_idle_poll_loop() -> None:
    elapsed, steps = _stop_by_signal(run_poll)
    assert elapsed < 15, elapsed
    assert steps == 0
