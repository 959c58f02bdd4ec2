"""Shared test doubles: a fake clock, fake channels and links, a log capture.

Unit tests of workers/ and supervisor/ logic use these instead of the machine's
clock, ZeroMQ sockets, socketpairs and real loggers, so a test passes time in and
sees every message a unit sent. They follow the interfaces the code already takes:
``plumbing.scheduler.LocalClock`` (``now()`` -> ``Now``), ``ipc.channels.Channel``
(send/recv/pending/pollable/close) and the non-blocking ``ipc.link.Link``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

from ntpd_py.core.units import NS_PER_S
from ntpd_py.ipc.framing import decode
from ntpd_py.ipc.link import LinkClosed
from ntpd_py.ipc.messages import Message
from ntpd_py.plumbing.scheduler import Now

__all__ = ["FakeChannel", "FakeClock", "FakeLink", "LogCapture", "channel_pair"]


@dataclass
class FakeClock:
    """CLOCK_MONOTONIC and CLOCK_REALTIME that move only when a test says so.

    ``advance`` moves both (time passing); ``step_realtime`` moves realtime alone (a
    clock step by someone else). The defaults are arbitrary but non-zero so that a
    unit which treats 0 as "never" is not fooled.
    """

    mono_ns: int = 1_000 * NS_PER_S
    real_ns: int = 1_700_000_000 * NS_PER_S

    def now(self) -> Now:
        return Now(self.mono_ns, self.real_ns)

    def advance(self, ns: int) -> Now:
        if ns < 0:
            raise ValueError("monotonic time does not go back")
        self.mono_ns += ns
        self.real_ns += ns
        return self.now()

    def step_realtime(self, ns: int) -> None:
        self.real_ns += ns

    def realtime_from_kernel_ns(self, kernel_real_ns: int) -> int:
        return kernel_real_ns


@dataclass
class FakeChannel:
    """One end of an in-memory channel pair; frames sent here arrive at the peer.

    ``capacity`` bounds the peer's queue like ``ipc.channels.QUEUE_LIMIT`` does (a full
    queue makes ``send`` return False). ``sent`` keeps every accepted frame for asserts.
    """

    capacity: int = 1000
    inbox: collections.deque[tuple[bytes, bytes]] = field(default_factory=collections.deque)
    sent: list[bytes] = field(default_factory=list)
    closed: bool = False
    peer: FakeChannel | None = None

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        target = self.peer
        if self.closed or target is None or target.closed or len(target.inbox) >= target.capacity:
            return False
        target.inbox.append((peer, frame))
        self.sent.append(frame)
        return True

    def recv(self) -> tuple[bytes, bytes] | None:
        return self.inbox.popleft() if self.inbox else None

    def pending(self) -> bool:
        return bool(self.inbox)

    def pollable(self) -> None:
        return None  # in-memory: the scheduler asks pending() instead

    def close(self) -> None:
        self.closed = True

    def sent_messages(self) -> list[Message]:
        """The frames this end sent, decoded (every type accepted)."""
        return [decode(frame) for frame in self.sent]


def channel_pair(capacity: int = 1000) -> tuple[FakeChannel, FakeChannel]:
    a, b = FakeChannel(capacity=capacity), FakeChannel(capacity=capacity)
    a.peer, b.peer = b, a
    return a, b


@dataclass
class FakeLink:
    """The supervisor link as a child sees it, without a socketpair or fd passing.

    ``sent`` records (message, fds) the unit sent; ``deliver`` queues what the
    supervisor would send; ``hang_up`` makes the next ``recv`` raise ``LinkClosed``.
    """

    sent: list[tuple[Message, list[int]]] = field(default_factory=list)
    incoming: collections.deque[tuple[Message, list[int]]] = field(
        default_factory=collections.deque
    )
    closed: bool = False
    fd: int = 1_000_000  # never a real descriptor: a poll on it would fail loudly

    def fileno(self) -> int:
        return self.fd

    def send(self, message: Message, fds: list[int] | None = None) -> bool:
        if self.closed:
            return False
        self.sent.append((message, list(fds or [])))
        return True

    def deliver(self, message: Message, fds: list[int] | None = None) -> None:
        self.incoming.append((message, list(fds or [])))

    def recv(self) -> tuple[Message, list[int]] | None:
        if self.incoming:
            return self.incoming.popleft()
        if self.closed:
            raise LinkClosed("fake link hung up")
        return None

    def hang_up(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


class LogCapture(logging.Handler):
    """A logger whose records stay in a list (``records``), not on stderr."""

    def __init__(self, name: str = "test") -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(f"ntpd_py.tests.{name}.{id(self)}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]
