"""WorkerBase bookkeeping with fake time, bus and link: heartbeats, status, drops, hang-up."""

from __future__ import annotations

import logging

from ntpd_py.ipc.framing import encode
from ntpd_py.ipc.messages import (
    HEARTBEAT_INTERVAL_NS,
    Heartbeat,
    Message,
    MsgType,
    PollAdvice,
    SourceStatus,
)
from ntpd_py.workers.base import RIDE_ALONG_NS, STATUS_INTERVAL_NS, WorkerBase

from tests.doubles import FakeChannel, FakeClock, FakeLink, LogCapture, channel_pair


def _status() -> SourceStatus:
    return SourceStatus(source_id="ntp:a", kind="ntp", name="a", state="running", poll_log2=4)


def _worker(capacity: int = 1000) -> tuple[WorkerBase, FakeLink, LogCapture, FakeChannel]:
    bus, control = channel_pair(capacity)
    link, logs = FakeLink(), LogCapture("base")
    worker = WorkerBase("ntp:a", bus, link, logs.logger)  # type: ignore[arg-type]  # a fake Link
    return worker, link, logs, control


def _bus(worker: WorkerBase) -> FakeChannel:
    assert isinstance(worker.bus, FakeChannel)
    return worker.bus


def test_first_housekeeping_heartbeats_and_reports_status() -> None:
    clock = FakeClock()
    worker, link, _, _ = _worker()
    worker.housekeeping(clock.now(), _status)
    assert [m for m, _ in link.sent] == [Heartbeat(worker_id="ntp:a", mono_ns=clock.mono_ns)]
    assert worker.bus.sent_messages() == [_status()]
    assert worker.base_deadline() == clock.mono_ns + HEARTBEAT_INTERVAL_NS


def test_heartbeat_rides_along_when_nearly_due_and_not_before() -> None:
    clock = FakeClock()
    worker, link, _, _ = _worker()
    worker.housekeeping(clock.now(), _status)
    # Well before the interval (minus the ride-along slack): nothing new.
    clock.advance(HEARTBEAT_INTERVAL_NS - RIDE_ALONG_NS - 1)
    worker.housekeeping(clock.now(), _status)
    assert len(link.sent) == 1
    # Within the slack: the heartbeat goes now rather than waking up again for it.
    clock.advance(2)
    worker.housekeeping(clock.now(), _status)
    assert len(link.sent) == 2


def test_status_every_interval_and_at_once_when_asked() -> None:
    clock = FakeClock()
    worker, _, _, _ = _worker()
    worker.housekeeping(clock.now(), _status)
    clock.advance(STATUS_INTERVAL_NS // 2)
    worker.housekeeping(clock.now(), _status)
    assert len(worker.bus.sent) == 1
    worker.status_now()
    worker.housekeeping(clock.now(), _status)
    assert len(worker.bus.sent) == 2


def test_a_full_bus_is_counted_not_raised() -> None:
    worker, _, _, _ = _worker(capacity=2)
    for _ in range(5):
        worker.send(_status())
    assert worker.bus_dropped == 3


def test_drain_bus_hands_over_accepted_messages_and_counts_malformed() -> None:
    clock = FakeClock()
    worker, _, logs, control = _worker()
    advice = PollAdvice(source_id="ntp:a", poll_log2=6)
    control.send(b"\x00garbage")
    control.send(encode(advice))
    control.send(encode(_status()))  # not accepted here
    got: list[Message] = []
    worker.drain_bus({MsgType.POLL_ADVICE}, got.append, clock.now())
    assert got == [advice]
    assert worker.bus_malformed == 2
    worker.limited.flush(clock.advance(3600 * 1_000_000_000).mono_ns)
    assert any("malformed" in m for m in logs.messages(logging.WARNING))


def test_link_hang_up_stops_heartbeats_to_it() -> None:
    clock = FakeClock()
    worker, link, _, _ = _worker()
    link.hang_up()
    worker.drain_link(lambda message, fds: None)
    assert worker.link_closed
    worker.housekeeping(clock.now(), _status)
    assert link.sent == []
    assert worker.base_pollables() == [worker.bus]  # the dead link is not polled any more


def test_without_a_link_the_heartbeat_deadline_is_far_away() -> None:
    clock = FakeClock()
    bus, _ = channel_pair()
    worker = WorkerBase("ntp:a", bus, None, LogCapture("nolink").logger)
    worker.housekeeping(clock.now(), _status)
    # Only the status interval sets the wake-up: no busy loop for a missing supervisor.
    assert worker.base_deadline() == clock.mono_ns + STATUS_INTERVAL_NS
