"""Clock-control's loop over in-memory channels: admission, drops, counting, answers."""

from __future__ import annotations

import logging

import msgpack
from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.ipc.framing import decode, encode
from ntpd_py.ipc.messages import CtlReply, CtlRequest, SampleMsg, SourceEntry
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.workers.clock_backends import ObserveClock
from ntpd_py.workers.clock_control import ClockControlTask

from tests.doubles import FakeClock

PTP = "ptp:/dev/ptp0"
NTP = "ntp:127.0.0.1:123"


_CLOCK = FakeClock()


def _now() -> Now:
    # Time passed in, never the machine's: each reading is 1 ms after the last.
    return _CLOCK.advance(1_000_000)


def _sample(source_id: str, kind: SourceKind, now: Now) -> SampleMsg:
    return SampleMsg.from_sample(Sample(
        source_id=source_id, kind=kind, offset_s=1e-6, delay_s=5e-7, uncertainty_s=1e-7,
        root_delay_s=0.0, root_dispersion_s=0.0, stratum=1, leap=LeapIndicator.NONE,
        reference_id=1, mono_ns=now.mono_ns, realtime_ns=now.real_ns,
        poll_log2=0 if kind is SourceKind.PTP else 4))  # within each source's configured limits


def _task():
    hub = MemoryHub()
    now = _now()
    sync = SynchronizationConfig(minimum_agreeing_sources=1)
    task = ClockControlTask(
        controller=ClockController(sync, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns),
        backend=ObserveClock(), bus=hub.router("bus"), pub=hub.pub("state"),
        control=hub.router("control"), link=None, store=None, log=logging.getLogger("t"))
    task.set_sources([
        SourceEntry(source_id=PTP, kind="ptp", name="/dev/ptp0", poll_log2=0, poll_min=0,
                    poll_max=0),
        SourceEntry(source_id=NTP, kind="ntp", name="127.0.0.1", poll_log2=4, poll_min=4,
                    poll_max=6),
    ], now)
    return hub, task


def _status(hub: MemoryHub, task: ClockControlTask) -> CtlReply:
    ctl = hub.dealer("control", b"ntpctl")
    ctl.send(encode(CtlRequest(command="status")))
    task.step(_now())
    reply = decode(ctl.recv()[1], max_size=1 << 20)
    assert isinstance(reply, CtlReply)
    return reply


def test_malformed_frames_from_a_worker_are_dropped_and_counted() -> None:
    hub, task = _task()
    ptp = hub.dealer("bus", PTP.encode())
    now = _now()
    for frame in (b"garbage", b"x" * 100_000, msgpack.packb([99, 1, {}]),
                  msgpack.packb([1, 1, {"source_id": PTP}])):
        ptp.send(frame)
    task.step(now)
    dropped = task.guard.stats[PTP].dropped
    assert dropped == {"undecodable": 1, "oversized": 1, "wrong-version": 1, "invalid": 1}
    reply = _status(hub, task)
    (view,) = [s for s in reply.clock.sources if s.source_id == PTP]
    assert view.ipc_dropped == 4
    assert reply.ipc == {"undecodable": 1, "oversized": 1, "wrong-version": 1, "invalid": 1}


def test_a_worker_cannot_speak_for_another_source() -> None:
    hub, task = _task()
    hub.dealer("bus", NTP.encode()).send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.stats[NTP].dropped == {"wrong-source": 1}
    assert task.controller.source_snapshots(now_mono_ns=_now().mono_ns)[0].samples == 0


def test_a_flooding_source_is_throttled_and_the_other_is_served() -> None:
    hub, task = _task()
    ptp, ntp = hub.dealer("bus", PTP.encode()), hub.dealer("bus", NTP.encode())
    now = _now()
    flood = encode(_sample(PTP, SourceKind.PTP, now))
    sent = sum(ptp.send(flood) for _ in range(10_000))
    ntp.send(encode(_sample(NTP, SourceKind.NTP, now)))
    task.step(now)
    stats = task.guard.stats
    assert stats[NTP].accepted == 1 and not stats[NTP].dropped
    assert stats[PTP].accepted <= 20
    assert stats[PTP].dropped["rate-limited"] + stats[PTP].accepted + hub.dropped >= sent
    snaps = {s.source_id: s for s in task.controller.source_snapshots(now_mono_ns=now.mono_ns)}
    assert snaps[NTP].samples == 1


def test_unknown_senders_are_refused() -> None:
    hub, task = _task()
    hub.dealer("bus", b"stranger").send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.totals() == {"unknown-sender": 1}


# -- issue #17: bounded work, contained failures, admission by configuration ------------------


def _task_with_servers(workers: list[str], listens: list[str]):
    hub, task = _task()
    task.set_sources(list(task.entries), _now(), workers, listens)
    return hub, task


def test_control_requests_are_rate_limited_and_samples_come_first() -> None:
    hub, task = _task()
    ctl = hub.dealer("control", b"observer")
    ptp = hub.dealer("bus", PTP.encode())
    request = encode(CtlRequest(command="status"))
    answered = refused = 0
    for round_ in range(12):  # within the PTP source's own burst of 16
        now = _now()
        for _ in range(50):
            ctl.send(request)
        ptp.send(encode(_sample(PTP, SourceKind.PTP, now)))
        task.step(now)
        while (item := ctl.recv()) is not None:
            reply = decode(item[1], max_size=1 << 20)
            assert isinstance(reply, CtlReply)
            if reply.ok:
                answered += 1
            else:
                assert reply.error.startswith("rate limited"), reply.error
                refused += 1
        # every wake-up took its sample, whatever the control flood
        assert task.guard.stats[PTP].accepted == round_ + 1
    # a wake-up builds at most MAX_REPLIES_PER_STEP full replies; the per-peer bucket
    # (burst 20) allows no more than that in a fraction of a second
    assert 0 < answered <= 21
    assert refused > 0
    assert task.ctl_counts["ctl-rate-limited"] == refused
    assert task.ipc_counts()["ctl-rate-limited"] == refused


def test_an_exception_while_handling_a_sample_drops_only_that_sample() -> None:
    hub, task = _task()
    calls = []

    def broken(sample, **kwargs):  # a bug or an overflow in the algorithm
        calls.append(sample)
        raise OverflowError("(34, 'Numerical result out of range')")

    real = task.controller.handle_sample
    task.controller.handle_sample = broken  # type: ignore[method-assign]
    ptp = hub.dealer("bus", PTP.encode())
    ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert len(calls) == 1
    assert task.guard.stats[PTP].dropped == {"error:OverflowError": 1}
    task.controller.handle_sample = real  # type: ignore[method-assign]
    ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.stats[PTP].accepted == 1
    assert _status(hub, task).ipc == {"error:OverflowError": 1}


def test_server_stats_only_from_configured_servers_and_listens_and_summed() -> None:
    from ntpd_py.ipc.messages import ServerStats

    hub, task = _task_with_servers(["server#1", "server#2"], ["127.0.0.1:123"])
    one, two = hub.dealer("bus", b"server#1"), hub.dealer("bus", b"server#2")
    one.send(encode(ServerStats(listen="127.0.0.1:123", counters={"received": 5})))
    two.send(encode(ServerStats(listen="127.0.0.1:123", counters={"received": 7})))
    one.send(encode(ServerStats(listen="0.0.0.0:1", counters={"received": 1})))
    hub.dealer("bus", b"server#5").send(
        encode(ServerStats(listen="127.0.0.1:123", counters={"received": 1})))
    task.step(_now())
    reply = _status(hub, task)
    # two server processes on one address add up instead of overwriting each other
    assert reply.servers == {"127.0.0.1:123": {"received": 12}}
    assert task.guard.stats["server#1"].dropped == {"unknown-listen": 1}
    assert reply.ipc == {"unknown-listen": 1, "unknown-sender": 1}


def test_no_server_stats_without_a_configured_server_and_the_reply_survives() -> None:
    # Regression (issue #17, 3a): ServerStats from `server#5` with > 64 listen values made
    # the next status reply fail its own schema and clock-control exit.
    from ntpd_py.ipc.messages import ServerStats

    hub, task = _task()
    server = hub.dealer("bus", b"server#5")
    for i in range(100):
        server.send(encode(ServerStats(listen=f"127.0.0.1:{1000 + i}", counters={"x": 1})))
    task.step(_now())
    reply = _status(hub, task)
    assert reply.ok and reply.servers == {}
    # even if the table were too big, the reply is an error, not a crash
    task.servers = {("server", f"l{i}"): {"x": 1} for i in range(100)}
    task.server_totals = lambda: {k[1]: v for k, v in task.servers.items()}  # type: ignore
    reply = _status(hub, task)
    assert not reply.ok and "could not build the reply" in reply.error
    assert task.ctl_counts["ctl-error"] == 1


def test_samples_from_the_future_or_older_than_the_last_are_dropped() -> None:
    hub, task = _task()
    ptp = hub.dealer("bus", PTP.encode())
    now = _now()
    future = _sample(PTP, SourceKind.PTP, Now(now.mono_ns + 10**15, now.real_ns))
    ptp.send(encode(future))
    ptp.send(encode(_sample(PTP, SourceKind.PTP, now)))
    ptp.send(encode(_sample(PTP, SourceKind.PTP, Now(now.mono_ns - 10**9, now.real_ns))))
    task.step(_now())
    bad_poll = _sample(PTP, SourceKind.PTP, _now()).model_copy(update={"poll_log2": -8})
    ptp.send(encode(bad_poll))  # the PHC's configured interval is 2^0 s
    task.step(_now())
    assert task.guard.stats[PTP].dropped == {"future": 1, "stale": 1, "poll-out-of-range": 1}
    assert task.guard.stats[PTP].accepted == 1
    # the source is not frozen: the next sample is taken
    ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.stats[PTP].accepted == 2


def test_a_source_status_outside_the_configured_poll_limits_is_dropped_and_never_sets_the_cap(
) -> None:
    from ntpd_py.ipc.messages import SourceStatus

    hub, task = _task()
    ntp = hub.dealer("bus", NTP.encode())
    bucket = task.guard._buckets[NTP]
    for poll in (-8, 3, 7):  # outside [4, 6]
        ntp.send(encode(SourceStatus(source_id=NTP, kind="ntp", name="x", state="running",
                                     poll_log2=poll)))
    ntp.send(encode(SourceStatus(source_id=NTP, kind="ntp", name="x", state="running",
                                 poll_log2=4)))
    task.step(_now())
    assert task.guard.stats[NTP].dropped == {"poll-out-of-range": 3}
    assert task.statuses[NTP].poll_log2 == 4
    assert task.guard._buckets[NTP] is bucket  # the rate cap is the configuration's


def test_absurd_values_are_refused_by_the_schema() -> None:
    import pytest
    from ntpd_py.ipc.framing import MalformedMessage

    base = _sample(PTP, SourceKind.PTP, _now()).model_dump()
    for field, value in (("root_dispersion_s", 1e308), ("delay_s", 16.5),
                         ("uncertainty_s", float("inf")), ("offset_s", float("nan")),
                         ("poll_log2", -32), ("root_delay_s", -1.0)):
        frame = msgpack.packb([1, 1, base | {field: value}])
        with pytest.raises(MalformedMessage, match="invalid"):
            decode(frame)


def test_a_failing_timer_or_publish_is_contained_and_held_back() -> None:
    hub, task = _task()
    now = _now()

    def broken_timer(**kwargs):
        raise ZeroDivisionError("float division by zero")

    task.controller.next_timer_mono_ns = lambda: now.mono_ns  # type: ignore[method-assign]
    task.controller.handle_timer = broken_timer  # type: ignore[method-assign]
    task.step(now)
    assert task.ctl_counts["internal:ZeroDivisionError"] == 1
    # held back a second: the loop does not spin on a timer that stays due
    assert task.next_deadline_ns() == now.mono_ns + 1_000_000_000
    task.step(now)
    assert task.ctl_counts["internal:ZeroDivisionError"] == 1
    ptp = hub.dealer("bus", PTP.encode())
    ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.stats[PTP].accepted == 1  # samples are still served


def test_warn_on_jump_sets_the_level_of_the_step_line(caplog) -> None:  # type: ignore[no-untyped-def]
    # [synchronization] warn-on-jump, as in ntpd-rs: a step is a warning, or information.
    from ntpd_py.core.actions import Step

    for warn, level in ((True, logging.WARNING), (False, logging.INFO)):
        _, task = _task()
        task.warn_on_jump = warn
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="t"):
            task._apply([Step(offset_ns=-2_500_000_000)], _now())
        (record,) = [r for r in caplog.records if "stepping the clock" in r.getMessage()]
        assert record.levelno == level
        assert "-2.500000 s" in record.getMessage()


def test_flooding_connections_are_refused_before_a_light_one() -> None:
    """Ten connections flooding at their own cap spend the shared 50/s budget; a
    person's ntpctl (one request now and then) is still answered, and the total stays
    bounded. Requests are read round-robin per connection (as ZeroMQ's ROUTER does),
    so a light connection meets a refilled global token in its turn."""
    hub, task = _task()
    heavy = [hub.dealer("control", f"flood{i}".encode()) for i in range(10)]
    light = hub.dealer("control", b"ntpctl")
    request = encode(CtlRequest(command="status"))
    start = _now()
    step_ns = 20_000_000  # 50 wake-ups/s: up to 200 replies/s (MAX_REPLIES_PER_STEP)
    heavy_ok = light_ok = light_refused = 0
    steps = 300  # 6 s of (simulated) time
    for i in range(steps):
        now = Now(start.mono_ns + i * step_ns, start.real_ns + i * step_ns)
        for sock in heavy:  # 100/s each, 20/s admitted each: 200/s > the 50/s budget
            for _ in range(2):
                sock.send(request)
        if i % 10 == 0:  # 5/s
            light.send(request)
        task.step(now)
        for sock in heavy:
            while (item := sock.recv()) is not None:
                reply = decode(item[1], max_size=1 << 20)
                assert isinstance(reply, CtlReply)
                heavy_ok += reply.ok
        while (item := light.recv()) is not None:
            reply = decode(item[1], max_size=1 << 20)
            assert isinstance(reply, CtlReply)
            if reply.ok:
                light_ok += 1
            else:
                light_refused += 1
    assert light_refused == 0 and light_ok >= steps // 10 - 2, (light_ok, light_refused)
    assert task.ctl_counts["ctl-rate-limited"] > 0  # the flood was refused
    assert heavy_ok + light_ok <= 50 * steps * step_ns / 1e9 + 50  # the global budget


class _CredentialChannel:
    """The control channel as the real ones are: each frame's sender uid, as the kernel
    would give it (here: the number after "uid" in the peer's name)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._uid: int | None = None

    def recv(self):
        item = self._inner.recv()
        self._uid = int(item[0].split(b"/")[0][3:]) if item is not None else None
        return item

    def sender_uid(self) -> int | None:
        return self._uid

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_a_flooder_reconnecting_per_request_is_limited_by_its_uid() -> None:
    """A new connection per request gains nothing: the bucket is the uid's. Another uid's
    occasional request is answered all along, and refusals are counted per reason."""
    hub, task = _task()
    task.control = _CredentialChannel(task.control)
    start = _now()
    step_ns = 20_000_000
    flood_ok = flood_refused = light_ok = light_refused = 0
    lights: list = []
    steps = 250  # 5 s
    for i in range(steps):
        now = Now(start.mono_ns + i * step_ns, start.real_ns + i * step_ns)
        conns = [hub.dealer("control", f"uid4243/{i}/{j}".encode()) for j in range(6)]
        for sock in conns:  # 300 requests/s, each on a fresh connection
            sock.send(encode(CtlRequest(command="status")))
        if i % 10 == 0:
            lights.append(hub.dealer("control", f"uid0/{i}".encode()))
            lights[-1].send(encode(CtlRequest(command="status")))
        task.step(now)
        for sock in conns + lights:
            while (item := sock.recv()) is not None:
                ok = decode(item[1], max_size=1 << 20).ok
                if sock in conns:
                    flood_ok += ok
                    flood_refused += not ok
                else:
                    light_ok += ok
                    light_refused += not ok
    seconds = steps * step_ns / 1e9
    assert light_refused == 0 and light_ok >= steps // 10 - 1, (light_ok, light_refused)
    # the flooder's uid got its own 20/s (plus its burst), however many connections it made
    assert flood_ok <= 20 * seconds + 21, flood_ok
    assert flood_refused > 1000
    assert task.ctl_counts["ctl-rate-limited"] >= flood_refused  # some replies still queued
    assert task.ctl_counts["ctl-global-limited"] == 0


def test_debug_log_has_each_sample_and_its_filter_state(caplog) -> None:  # type: ignore[no-untyped-def]
    hub, task = _task()
    ptp = hub.dealer("bus", PTP.encode())
    with caplog.at_level(logging.DEBUG, logger="t"):
        for _ in range(4):  # three to start the filter, then one it has an estimate for
            ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
            task.step(_now())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sample ")]
    assert len(lines) == 4
    assert lines[0].startswith(f"sample {PTP} mono=") and "offset=1.000e-06" in lines[0]
    assert "filter offset=nan" in lines[0]  # no estimate before the start-up samples
    last = lines[-1]
    assert "filter offset=nan" not in last and "wander=1.000e-08" in last
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="t"):  # not built at all above debug
        ptp.send(encode(_sample(PTP, SourceKind.PTP, _now())))
        task.step(_now())
    assert not [r for r in caplog.records if r.getMessage().startswith("sample ")]


class _RecordingClock(ObserveClock):
    """The observe backend, recording what it is told, with the system backend's rewrite
    interval (the kernel's clock is never touched in tests)."""

    refresh_interval_ns = 50_000_000

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[object] = []

    def apply(self, action) -> None:  # type: ignore[no-untyped-def]
        self.applied.append(action)
        super().apply(action)


def test_a_new_frequency_is_written_again_every_50_ms_for_two_seconds() -> None:
    from ntpd_py.core.actions import SetFrequency
    from ntpd_py.workers.clock_backends import FREQUENCY_REFRESH_WINDOW_NS

    _, task = _task()
    clock = _RecordingClock()
    task.backend = clock
    start = _now()
    task._apply([SetFrequency(freq=3e-6)], start)
    deadline = task.next_deadline_ns()
    assert deadline is not None and deadline <= start.mono_ns + 50_000_000
    rewrites = 0
    t = start.mono_ns
    while t < start.mono_ns + FREQUENCY_REFRESH_WINDOW_NS + 200_000_000:
        t += 10_000_000
        task.step(Now(mono_ns=t, real_ns=start.real_ns + (t - start.mono_ns)))
        rewrites = sum(1 for a in clock.applied if a == SetFrequency(freq=3e-6)) - 1
    assert 38 <= rewrites <= 40  # every 50 ms for 2 s, then no more
    assert task._frequency is None
    # a stopped steering is left alone
    task._apply([SetFrequency(freq=1e-6)], Now(mono_ns=t, real_ns=start.real_ns))
    task.steering_stopped = "panic"
    before = len(clock.applied)
    task.step(Now(mono_ns=t + 60_000_000, real_ns=start.real_ns))
    assert len(clock.applied) == before and task._frequency is None
