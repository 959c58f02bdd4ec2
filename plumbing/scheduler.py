"""What every loop runs on: the current time, the Task shape, and the schedulers.

A :class:`Task` is one worker or clock-control loop written as a small
non-blocking state machine: it names what it waits on (`pollables`), when it
next wants to run (`next_deadline_ns`), and does all due work in `step`. The
same tasks run under two schedulers:

- :func:`run_zmq` — the multi-process daemon: one task per process, waiting
  with ``zmq.Poller`` on ZeroMQ sockets and plain fds.
- :func:`run_poll` — ``--single-process``: every task in one process over
  in-memory channels, waiting with ``select.poll`` (no threads, asyncio,
  epoll or ZeroMQ), so it also runs under LD_PRELOAD clock/network simulators.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LocalClock", "Now", "SystemClockReader", "Task", "drain", "run_poll", "run_zmq"]

# Without a signal wake-up pipe a loop must look at its stop flag this often (the
# wait itself is retried after a signal); with one, signals wake it and it sleeps
# until its next deadline, up to MAX_IDLE_WAIT_NS.
MAX_WAIT_NS = 1_000_000_000
MAX_IDLE_WAIT_NS = 30_000_000_000


@dataclass(frozen=True, slots=True)
class Now:
    """One reading of the local clocks: CLOCK_MONOTONIC and the local realtime clock."""

    mono_ns: int
    real_ns: int


class LocalClock(Protocol):
    def now(self) -> Now: ...

    def realtime_from_kernel_ns(self, kernel_real_ns: int) -> int:
        """Map a CLOCK_REALTIME timestamp from the kernel (SO_TIMESTAMPNS) onto this clock."""
        ...


class SystemClockReader:
    """The real clocks of this machine (read only)."""

    def now(self) -> Now:
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        return Now(mono, real)

    def realtime_from_kernel_ns(self, kernel_real_ns: int) -> int:
        return kernel_real_ns


class Task(Protocol):
    name: str

    def pollables(self) -> Sequence[Any]:
        """ZeroMQ sockets, plain fds, or in-memory channels (with `pending()`) to wait on."""
        ...

    def next_deadline_ns(self) -> int | None:
        """CLOCK_MONOTONIC instant at which `step` must run even if nothing is readable."""
        ...

    def step(self, now: Now) -> None:
        """Do everything that is due or readable; never block."""
        ...


def _timeout_ms(tasks: Sequence[Task], now_mono: int, cap_ns: int) -> int:
    deadlines = [d for d in (t.next_deadline_ns() for t in tasks) if d is not None]
    if not deadlines:
        return cap_ns // 1_000_000
    wait = max(0, min(deadlines) - now_mono)
    # Round up so that a task woken "just before" its deadline does not spin.
    return min(cap_ns, wait + 999_999) // 1_000_000


@contextlib.contextmanager
def _signal_pipe() -> Iterator[int | None]:
    """A pipe that a signal makes readable (signal.set_wakeup_fd), or None off the
    main thread. Without it a loop would wake every second just to see its stop flag."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        os.close(r)
        os.close(w)
        yield None
        return
    try:
        yield r
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def _due(task: Task, now_mono: int) -> bool:
    deadline = task.next_deadline_ns()
    return deadline is not None and deadline <= now_mono


def run_zmq(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool]) -> None:
    """Run tasks until `should_stop()`; waits on ZeroMQ sockets and fds with zmq.Poller."""
    import zmq

    with _signal_pipe() as wake:
        _run_zmq(zmq, tasks, clock, should_stop, wake)


def _run_zmq(zmq: Any, tasks: Sequence[Task], clock: LocalClock,
             should_stop: Callable[[], bool], wake: int | None) -> None:
    cap_ns = MAX_WAIT_NS if wake is None else MAX_IDLE_WAIT_NS
    while not should_stop():
        poller = zmq.Poller()
        if wake is not None:
            poller.register(wake, zmq.POLLIN)
        owners: dict[Any, list[Task]] = {}
        for task in tasks:
            for item in task.pollables():
                target = item.pollable() if hasattr(item, "pollable") else item
                if target is None:
                    continue
                key = target if isinstance(target, int) else id(target)
                if key not in owners:
                    poller.register(target, zmq.POLLIN)
                    owners[key] = []
                owners[key].append(task)
        try:
            events = poller.poll(_timeout_ms(tasks, clock.now().mono_ns, cap_ns))
        except zmq.ZMQError as exc:
            if exc.errno == 4:  # EINTR: a signal arrived; the flags decide
                continue
            raise
        ready: set[int] = set()
        for target, _ in events:
            if wake is not None and target == wake:
                drain(wake)
                continue
            key = target if isinstance(target, int) else id(target)
            ready.update(id(t) for t in owners.get(key, []))
        now = clock.now()
        for task in tasks:
            if id(task) in ready or _due(task, now.mono_ns):
                task.step(now)


def run_poll(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool]) -> None:
    """Run tasks until `should_stop()` with select.poll and in-memory channels."""
    with _signal_pipe() as wake:
        _run_poll(tasks, clock, should_stop, wake)


def _run_poll(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool],
              wake: int | None) -> None:
    cap_ns = MAX_WAIT_NS if wake is None else MAX_IDLE_WAIT_NS
    while not should_stop():
        poller = select.poll()
        if wake is not None:
            poller.register(wake, select.POLLIN)
        owners: dict[int, list[Task]] = {}
        pending: set[int] = set()
        for task in tasks:
            for item in task.pollables():
                fds = [item] if isinstance(item, int) else getattr(item, "fds", list)()
                for fd in fds:
                    owners.setdefault(fd, []).append(task)
                if hasattr(item, "pending") and item.pending():
                    pending.add(id(task))
        for fd in owners:
            poller.register(fd, select.POLLIN)
        timeout = 0 if pending else _timeout_ms(tasks, clock.now().mono_ns, cap_ns)
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        ready = set(pending)
        for fd, _ in events:
            if fd == wake:
                drain(wake)
                continue
            ready.update(id(t) for t in owners.get(fd, []))
        now = clock.now()
        for task in tasks:
            if id(task) in ready or _due(task, now.mono_ns):
                task.step(now)
