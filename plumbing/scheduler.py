"""What every loop runs on: the current time, the Task shape, and the schedulers.

A :class:`Task` is one worker or clock-control loop written as a small
non-blocking state machine: it names what it waits on (`pollables`), when it
next wants to run (`next_deadline_ns`), and does all due work in `step`. One
loop, :func:`run`, runs them; only how it waits is pluggable (a `Waiter`):

- :class:`ZmqWaiter` (:func:`run_zmq`) — the multi-process daemon: one task per
  process, waiting with ``zmq.Poller`` on ZeroMQ sockets and plain fds.
- :class:`PollWaiter` (:func:`run_poll`) — ``--single-process``: every task in
  one process over in-memory channels, waiting with ``select.poll`` (no threads,
  asyncio, epoll or ZeroMQ), so it also runs under LD_PRELOAD clock/network
  simulators.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LocalClock", "Now", "PollWaiter", "SystemClockReader", "Task", "Waiter", "ZmqWaiter",
           "drain", "run", "run_poll", "run_zmq"]

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


class Waiter(Protocol):
    """How one pass of the loop waits: register what the tasks named, then wait.

    `register` takes one pollable and returns the key its readiness will be
    reported under (None: nothing to wait on); `wait` returns the keys that became
    readable. The loop itself is the same for every kind of waiter.
    """

    def register(self, item: Any) -> Hashable | None: ...

    def wait(self, timeout_ms: int) -> list[Hashable]:
        """Keys that are readable; [] after a timeout or a signal."""
        ...


class ZmqWaiter:
    """The multi-process daemon's wait: zmq.Poller over ZeroMQ sockets and fds."""

    def __init__(self) -> None:
        import zmq

        self._zmq = zmq
        self._poller = zmq.Poller()
        self._seen: set[Hashable] = set()

    def register(self, item: Any) -> Hashable | None:
        target = item.pollable() if hasattr(item, "pollable") else item
        if target is None:
            return None
        key: Hashable = target if isinstance(target, int) else id(target)
        if key not in self._seen:
            self._poller.register(target, self._zmq.POLLIN)
            self._seen.add(key)
        return key

    def wait(self, timeout_ms: int) -> list[Hashable]:
        try:
            events = self._poller.poll(timeout_ms)
        except self._zmq.ZMQError as exc:
            if exc.errno == errno.EINTR:  # a signal arrived; the flags decide
                return []
            raise
        return [target if isinstance(target, int) else id(target) for target, _ in events]


class PollWaiter:
    """``--single-process``: select.poll over plain fds and in-memory channels (whose
    queued frames count as readable without a wait)."""

    def __init__(self) -> None:
        self._poller = select.poll()
        self._seen: set[int] = set()
        self._pending: list[Hashable] = []

    def register(self, item: Any) -> Hashable | None:
        fds: list[int] = [item] if isinstance(item, int) else list(getattr(item, "fds", list)())
        for fd in fds:
            if fd not in self._seen:
                self._poller.register(fd, select.POLLIN)
                self._seen.add(fd)
        key: Hashable = item if isinstance(item, int) else id(item)
        if hasattr(item, "pending") and item.pending():
            self._pending.append(key)
        # An in-memory channel is reported ready under its own key: map its fds to it.
        return key if not fds or isinstance(item, int) else _Alias(key, fds)

    def wait(self, timeout_ms: int) -> list[Hashable]:
        try:
            events = self._poller.poll(0 if self._pending else timeout_ms)
        except InterruptedError:
            return list(self._pending)
        return [*self._pending, *(fd for fd, _ in events)]


@dataclass(frozen=True, slots=True)
class _Alias:
    """A pollable known by its own key that becomes readable through any of its fds."""

    key: Hashable
    fds: list[int]

    def __hash__(self) -> int:
        return hash(self.key)


def run(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool],
        make_waiter: Callable[[], Waiter]) -> None:
    """Run tasks until `should_stop()`: the one scheduler loop of every process.

    Each pass builds a fresh waiter from the tasks' pollables (a task may change
    them between steps), waits until something is readable, a signal arrives or the
    earliest deadline passes, then steps every task that is readable or due.
    """
    with _signal_pipe() as wake:
        cap_ns = MAX_WAIT_NS if wake is None else MAX_IDLE_WAIT_NS
        while not should_stop():
            waiter = make_waiter()
            wake_key = waiter.register(wake) if wake is not None else None
            owners: dict[Hashable, list[Task]] = {}
            for task in tasks:
                for item in task.pollables():
                    key = waiter.register(item)
                    if isinstance(key, _Alias):
                        for fd in key.fds:
                            owners.setdefault(fd, []).append(task)
                        key = key.key
                    if key is not None:
                        owners.setdefault(key, []).append(task)
            ready_keys = waiter.wait(_timeout_ms(tasks, clock.now().mono_ns, cap_ns))
            ready: set[int] = set()
            for key in ready_keys:
                if wake is not None and key == wake_key:
                    drain(wake)
                    continue
                ready.update(id(t) for t in owners.get(key, []))
            now = clock.now()
            for task in tasks:
                if id(task) in ready or _due(task, now.mono_ns):
                    task.step(now)


def run_zmq(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool]) -> None:
    """Run tasks until `should_stop()`, waiting on ZeroMQ sockets and fds."""
    run(tasks, clock, should_stop, ZmqWaiter)


def run_poll(tasks: Sequence[Task], clock: LocalClock, should_stop: Callable[[], bool]) -> None:
    """Run tasks until `should_stop()` with select.poll and in-memory channels."""
    run(tasks, clock, should_stop, PollWaiter)
