"""The metrics worker's query and staleness logic on a fake clock and fake control channel."""

from __future__ import annotations

from ntpd_py.ipc.framing import encode
from ntpd_py.ipc.messages import CtlReply, CtlRequest
from ntpd_py.workers.metrics import BIND_RETRY_NS, QUERY_INTERVAL_NS, STALE_NS, MetricsTask

from tests.doubles import FakeChannel, FakeClock, FakeLink, LogCapture, channel_pair
from tests.views import clock_state as _state

# TEST-NET-1 is never a local address: bind fails (EADDRNOTAVAIL) with no traffic sent.
UNBINDABLE = "192.0.2.1:9975"


def _task(clock: FakeClock) -> tuple[MetricsTask, FakeChannel, LogCapture]:
    control, clock_control = channel_pair()
    logs = LogCapture("metrics")
    task = MetricsTask(worker_id="metrics", control=control, link=FakeLink(), log=logs.logger,
                       listen=UNBINDABLE, clock=clock)
    return task, clock_control, logs


def _requests(control: FakeChannel) -> int:
    count = 0
    while (item := control.recv()) is not None:
        assert item[1] == encode(CtlRequest(command="status"))
        count += 1
    return count


def test_one_request_at_a_time_until_clock_control_answers_or_goes_stale() -> None:
    clock = FakeClock()
    task, clock_control, _ = _task(clock)
    task.step(clock.now())
    assert _requests(clock_control) == 1
    for _ in range(4):  # unanswered: no pile-up of requests every interval
        task.step(clock.advance(QUERY_INTERVAL_NS))
    assert _requests(clock_control) == 0
    task.step(clock.advance(STALE_NS))  # given up on that one: ask again
    assert _requests(clock_control) == 1
    clock_control.send(encode(CtlReply(ok=True, clock=_state(clock))))
    task.step(clock.advance(1))
    assert _requests(clock_control) == 0  # the answer came before the next interval
    task.step(clock.advance(QUERY_INTERVAL_NS))
    assert _requests(clock_control) == 1


def test_scrapes_are_503_until_a_reply_and_again_once_it_is_stale() -> None:
    clock = FakeClock()
    task, clock_control, _ = _task(clock)
    task.step(clock.now())
    status, _, body = task.render("text/plain")
    assert status == 503 and b"has not answered yet" in body
    clock_control.send(encode(CtlReply(ok=True, clock=_state(clock))))
    task.step(clock.advance(1))
    status, content_type, body = task.render("text/plain")
    assert status == 200 and content_type.startswith("text/plain")
    assert b"ntp_source_offset" in body
    clock.advance(STALE_NS + 1)
    status, _, body = task.render("text/plain")
    assert status == 503 and b"for 5 s" in body


def test_a_failed_bind_is_logged_and_retried_later() -> None:
    clock = FakeClock()
    task, _, logs = _task(clock)
    task.step(clock.now())
    assert task.server is None
    assert any("cannot listen" in m for m in logs.messages())
    assert task.next_deadline_ns() is not None
    assert clock.mono_ns + BIND_RETRY_NS >= (task.next_deadline_ns() or 0)
