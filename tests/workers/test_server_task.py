"""The server worker's logic: clock state for replies, state feed, counter pacing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.timestamps import unix_ns_to_ntp64
from ntpd_py.core.units import NS_PER_S
from ntpd_py.ipc.framing import encode
from ntpd_py.ipc.messages import ServerStats
from ntpd_py.workers.server import (
    STATS_INTERVAL_NS,
    STATS_REFRESH_NS,
    ServerTask,
    server_state_from,
)

from tests.doubles import FakeChannel, FakeClock, FakeLink, LogCapture, channel_pair
from tests.views import clock_state as _state
from tests.views import entry as _entry
from tests.views import system_snapshot as _system


def test_synchronized_state_dates_the_reference_time_back_by_the_update_age() -> None:
    clock = FakeClock()
    message = _state(clock)  # last update "now" at clock.mono_ns
    state = server_state_from(message.model_copy(
        update={"system": message.system.model_copy(update={"last_update_age_s": 2.0})}))
    assert state.synchronized and state.stratum == message.system.stratum
    assert state.reference_time_ntp == unix_ns_to_ntp64(clock.real_ns - 2 * NS_PER_S)
    assert state.leap is LeapIndicator.NONE


def test_unsynchronized_state_keeps_only_the_reference_id() -> None:
    from ntpd_py.workers.bus_guard import BusGuard
    from ntpd_py.workers.status_view import build_clock_state

    clock = FakeClock()
    message = build_clock_state(_system(synced=False), [], [_entry("ntp:a")], {}, BusGuard(),
                                "system", clock.mono_ns, clock.real_ns)
    state = server_state_from(message)
    assert not state.synchronized and state.reference_time_ntp == 0
    assert state.reference_id == message.system.reference_id


@pytest.fixture
def loopback() -> Iterator[socket.socket]:
    # A bound socket nobody sends to: ServerBatchIO needs a real descriptor.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def _task(sock: socket.socket) -> tuple[ServerTask, FakeChannel, FakeChannel]:
    port = sock.getsockname()[1]
    config = load_config_text(f'[[server]]\nlisten = "127.0.0.1:{port}"\n')
    bus, _ = channel_pair()
    feed, publisher = channel_pair()
    task = ServerTask(config=config, sockets=[(config.server[0], sock)], worker_id="server",
                      bus=bus, state_feed=feed, link=FakeLink(), log=LogCapture("server").logger)
    return task, bus, publisher


def _stats(bus: FakeChannel) -> list[ServerStats]:
    sent = [m for m in bus.sent_messages() if isinstance(m, ServerStats)]
    bus.sent.clear()
    return sent


def test_idle_counters_are_sent_once_then_refreshed_each_minute(loopback: socket.socket) -> None:
    clock = FakeClock()
    task, bus, _ = _task(loopback)
    task.step(clock.now())
    assert len(_stats(bus)) == 1
    for _ in range(5):  # unchanged counters are not repeated every interval
        task.step(clock.advance(STATS_INTERVAL_NS))
    assert _stats(bus) == []
    task.step(clock.advance(STATS_REFRESH_NS))
    assert len(_stats(bus)) == 1


def test_the_latest_published_state_is_used_and_garbage_ignored(loopback: socket.socket) -> None:
    clock = FakeClock()
    task, _, publisher = _task(loopback)
    responder = task.serving[0][1]
    assert not responder.state.synchronized
    publisher.send(b"\x00garbage")
    task.step(clock.now())
    assert not responder.state.synchronized
    older, newer = _state(clock), _state(clock)
    newer = newer.model_copy(update={"realtime_ns": clock.real_ns + NS_PER_S})
    publisher.send(encode(older))
    publisher.send(encode(newer))
    task.step(clock.advance(1))
    assert responder.state == server_state_from(newer)
