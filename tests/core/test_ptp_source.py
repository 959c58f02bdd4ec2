"""core/ptp_source.py: the PHC source state machine, driven with synthetic events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.phc import PhcCaps, PreciseReading, Reading, ReadMethod
from ntpd_py.core.phc_estimate import Estimator
from ntpd_py.core.ptp_events import (
    CloseDevice,
    DeviceErrorKind,
    DeviceFailed,
    DeviceOpened,
    OpenDevice,
    PtpAction,
    PtpSourceState,
    Publish,
    ReadDevice,
    ReadingsRead,
    Report,
    SetTimer,
)
from ntpd_py.core.ptp_source import (
    REJECTIONS_BEFORE_REPORT,
    STARTUP_BURST_SAMPLES,
    PtpSource,
    readings_per_poll,
)

NS = 1_000_000_000
T0 = 1_795_000_000 * NS


def caps(cross: bool = False) -> PhcCaps:
    return PhcCaps(0, 0, 0, 0, False, 0, cross, False, 0)


def opened(cross: bool = False, name: str = "igb") -> DeviceOpened:
    return DeviceOpened(caps(cross), "/dev/ptp0", 0, name)


def good_read(method: ReadMethod, n: int = 25, mono: int = 0) -> ReadingsRead:
    readings = tuple(Reading(T0 + i * 1_000, T0 + i * 1_000 + 250 + 40, T0 + i * 1_000 + 500)
                     for i in range(n))
    return ReadingsRead(method, readings, mono, T0 + 100_000)


def source(interval: int = 0, **kw: object) -> PtpSource:
    config = PtpSourceConfig(mode="ptp", path="/dev/ptp_kvm", interval=interval)
    return PtpSource(config, "ptp0", **kw)  # type: ignore[arg-type]


def of(actions: list[PtpAction], kind: type) -> list[PtpAction]:
    return [a for a in actions if isinstance(a, kind)]


def running(src: PtpSource, cross: bool = False, now: int = 0, name: str = "igb") -> ReadDevice:
    assert src.start(now) == [OpenDevice()]
    acts = src.handle_event(opened(cross, name), now)
    assert src.state is PtpSourceState.RUNNING
    (read,) = of(acts, ReadDevice)
    assert isinstance(read, ReadDevice)
    return read


def test_prefers_precise_then_falls_back_on_eopnotsupp() -> None:
    src = source()
    assert running(src, cross=True) == ReadDevice(ReadMethod.PRECISE, 1)
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.UNSUPPORTED, "nope", 95), 10)
    assert of(acts, ReadDevice) == [ReadDevice(ReadMethod.EXTENDED, 25)]
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.UNSUPPORTED, "nope", 95), 20)
    assert of(acts, ReadDevice) == [ReadDevice(ReadMethod.BASIC, 25)]
    assert src.method is ReadMethod.BASIC and src.status().errors == {"unsupported": 2}
    # chosen once: the next poll uses BASIC straight away
    src.handle_event(good_read(ReadMethod.BASIC), 30)
    assert src.handle_timer(NS) == [ReadDevice(ReadMethod.BASIC, 25)]


def test_without_cross_timestamping_starts_with_extended() -> None:
    assert running(source()) == ReadDevice(ReadMethod.EXTENDED, 25)


def test_no_method_left_fails_for_good() -> None:
    src = source(method=ReadMethod.PRECISE)
    running(src)
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.UNSUPPORTED, "EOPNOTSUPP", 95), 5)
    assert CloseDevice() in acts and src.state is PtpSourceState.FAILED
    assert src.deadline_ns is None and "no read method works" in src.status().message


def test_precise_reading_gives_zero_window_sample() -> None:
    src = source()
    running(src, cross=True)
    event = ReadingsRead(ReadMethod.PRECISE, PreciseReading(T0 + 1_234, T0, 99), 7 * NS, T0 + 10)
    (pub,) = of(src.handle_event(event, 1), Publish)
    assert isinstance(pub, Publish)
    assert pub.sample.offset_s == pytest.approx(1.234e-6) and pub.sample.delay_s == 0.0
    assert pub.sample.mono_ns == 7 * NS - 10


def test_polls_on_an_absolute_grid_without_drift() -> None:
    src = source(interval=-2)  # 250 ms
    running(src, now=1_000)
    poll = NS // 4
    # each read completes late by a varying amount; deadlines stay on the grid
    now = 1_000
    for k in range(1, 6):
        acts = src.handle_event(good_read(src.method or ReadMethod.EXTENDED), now + 3_000 * k)
        (timer,) = of(acts, SetTimer)
        assert timer == SetTimer(1_000 + k * poll)
        now = 1_000 + k * poll
        assert src.handle_timer(now - 1) == [SetTimer(now)]  # early wake-up: keep waiting
        assert of(src.handle_timer(now), ReadDevice)
    # a read that overruns two slots skips them rather than bunching polls
    acts = src.handle_event(good_read(ReadMethod.EXTENDED), now + 2 * poll + 5)
    assert of(acts, SetTimer) == [SetTimer(now + 3 * poll)]


@given(st.integers(-7, 17), st.lists(st.integers(0, 2 * NS), min_size=1, max_size=20))
def test_deadlines_are_grid_points_after_now(interval: int, lags: list[int]) -> None:
    src = source(interval=interval)
    running(src, now=0)
    poll = NS * 2**interval
    now = 0
    for index, lag in enumerate(lags):
        acts = src.handle_event(good_read(ReadMethod.EXTENDED, 2), now + lag)
        (timer,) = of(acts, SetTimer)
        assert isinstance(timer, SetTimer)
        # the start-up burst: the first samples on the quarter-second grid
        grid = NS // 4 if index < STARTUP_BURST_SAMPLES - 1 and interval > -2 else poll
        assert timer.deadline_mono_ns > now + lag and timer.deadline_mono_ns % int(grid) == 0
        now = timer.deadline_mono_ns
        src.handle_timer(now)


def test_read_budget_limits_readings_and_interval() -> None:
    assert readings_per_poll(0, 100) == (0, 25)
    assert readings_per_poll(-3, 100) == (-3, 12)
    assert readings_per_poll(-7, 100) == (-6, 1)  # 128 Hz x 1 read > 100/s: poll at 64 Hz
    assert readings_per_poll(-7, 2000) == (-7, 15)
    src = source(interval=-7)
    assert running(src, name="ena-ptp-0000:00:05.0") == ReadDevice(ReadMethod.EXTENDED, 1)
    status = src.status()
    assert status.poll_log2 == -6 and "read budget of 100/s" in status.message


def test_busy_halves_readings_and_backs_off_then_recovers() -> None:
    src = source(interval=-3)
    running(src, now=0, name="ena-ptp")
    assert src.status().readings_per_sample == 12
    poll = NS // 8
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.BUSY, "EBUSY", 16), 10)
    assert of(acts, SetTimer) == [SetTimer(2 * poll)]
    assert src.handle_timer(2 * poll) == [ReadDevice(ReadMethod.EXTENDED, 6)]
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.BUSY, "EAGAIN", 11), 2 * poll + 10)
    assert of(acts, SetTimer) == [SetTimer(3 * poll + 3 * poll)]  # skips 3 slots
    assert src.handle_timer(6 * poll) == [ReadDevice(ReadMethod.EXTENDED, 3)]
    src.handle_event(good_read(ReadMethod.EXTENDED, 3), 6 * poll + 10)
    assert src.handle_timer(7 * poll) == [ReadDevice(ReadMethod.EXTENDED, 4)]
    assert src.status().errors == {"busy": 2}


def test_missing_path_waits_with_backoff_until_it_appears() -> None:
    src = source()
    src.start(0)
    now, deadlines = 0, []
    for _ in range(9):
        acts = src.handle_event(DeviceFailed(DeviceErrorKind.MISSING, "/dev/ptp_kvm missing"), now)
        assert src.state is PtpSourceState.WAITING
        (timer,) = of(acts, SetTimer)
        assert isinstance(timer, SetTimer)
        deadlines.append(timer.deadline_mono_ns - now)
        now = timer.deadline_mono_ns
        assert src.handle_timer(now) == [OpenDevice()]
    assert deadlines == [NS, 2 * NS, 4 * NS, 8 * NS, 16 * NS, 32 * NS, 64 * NS, 64 * NS, 64 * NS]
    assert "modprobe ptp_kvm" in src.status().message
    acts = src.handle_event(opened(), now)
    assert src.state is PtpSourceState.RUNNING and of(acts, ReadDevice)


def test_not_a_ptp_clock_fails_for_good() -> None:
    src = source()
    src.start(0)
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.NOT_PTP, "/dev/null is not a PTP "
                                         "clock (PTP_CLOCK_GETCAPS on: ENOTTY)", 25), 0)
    (report,) = of(acts, Report)
    assert isinstance(report, Report)
    assert report.status.state is PtpSourceState.FAILED
    assert report.status.message.startswith("not a PTP clock")
    assert src.deadline_ns is None and not of(acts, SetTimer)


def test_permission_denied_names_path_and_user_and_retries() -> None:
    src = source()
    src.start(0)
    msg = "permission denied: opening /dev/ptp_kvm as user ntpd-py (EACCES)"
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.PERMISSION, msg, 13), 0)
    assert src.state is PtpSourceState.FAILED
    assert "/dev/ptp_kvm" in src.status().message and "ntpd-py" in src.status().message
    assert of(acts, SetTimer) == [SetTimer(NS)]


def test_vanished_device_is_unreachable_then_recovered_with_reprobe() -> None:
    src = source()
    running(src, cross=True)
    src.handle_event(DeviceFailed(DeviceErrorKind.UNSUPPORTED, "x", 95), 1)
    src.handle_event(good_read(ReadMethod.EXTENDED), 2)
    assert src.handle_timer(NS) == [ReadDevice(ReadMethod.EXTENDED, 25)]
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.VANISHED, "/dev/ptp0 vanished", 19), NS)
    assert acts[0] == CloseDevice() and src.state is PtpSourceState.UNREACHABLE
    assert of(acts, SetTimer) == [SetTimer(2 * NS)]
    assert src.handle_timer(2 * NS) == [OpenDevice()]
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.MISSING, "/dev/ptp_kvm does not exist"),
                            2 * NS)
    assert src.state is PtpSourceState.UNREACHABLE  # not "waiting": it was there before
    assert of(acts, SetTimer) == [SetTimer(4 * NS)]
    src.handle_timer(4 * NS)
    acts = src.handle_event(opened(cross=True), 4 * NS)
    assert src.state is PtpSourceState.RUNNING and "recovered" in src.status().message
    assert of(acts, ReadDevice) == [ReadDevice(ReadMethod.PRECISE, 1)]  # re-probed


def test_repeated_io_errors_reopen() -> None:
    src = source()
    running(src)
    for i in range(2):
        acts = src.handle_event(DeviceFailed(DeviceErrorKind.IO, "EIO", 5), i * NS + 1)
        assert not of(acts, CloseDevice)
        src.handle_timer((i + 1) * NS)
    acts = src.handle_event(DeviceFailed(DeviceErrorKind.IO, "EIO", 5), 2 * NS + 1)
    assert CloseDevice() in acts and src.state is PtpSourceState.UNREACHABLE


def test_stepped_poll_is_dropped_and_counted() -> None:
    src = source()
    running(src)
    bad = ReadingsRead(ReadMethod.EXTENDED, (Reading(T0, T0, T0 - 5),), 0, T0)
    acts = src.handle_event(bad, 1)
    assert not of(acts, Publish) and of(acts, SetTimer)
    status = src.status()
    assert status.errors == {"stepped": 1} and status.polls == 1 and status.samples == 0


def test_status_counts_and_last_reading() -> None:
    src = source()
    running(src)
    src.handle_event(good_read(ReadMethod.EXTENDED, 25), 1)
    status = src.status()
    assert (status.polls, status.readings, status.samples) == (1, 25, 1)
    assert status.last_window_ns == 500 and status.last_offset_ns == 40
    assert status.method is ReadMethod.EXTENDED and status.resolved_path == "/dev/ptp0"


def test_unexpected_event_is_a_local_error_and_changes_nothing() -> None:
    src = source()
    with pytest.raises(ValueError):
        src.handle_event(good_read(ReadMethod.BASIC), 0)
    src.start(0)
    with pytest.raises(ValueError):
        src.handle_event(good_read(ReadMethod.BASIC), 0)  # an open is pending, not a read
    assert src.handle_event(opened(), 0)  # the pending open is still accepted


def test_each_read_path_uses_its_default_estimator() -> None:
    # windows 100 (offset +50), 150 (offset -50), rest wide: min-window says +50, the
    # low-quartile mean of the two tightest says 0 (BASIC's and clock_gettime's default),
    # ROBUST (EXTENDED's) weighs them 1/(w² + 125²) and leaves the wide ones out:
    # 50·(38125 - 25625)/63750 ≈ +10
    def poll(method: ReadMethod) -> ReadingsRead:
        shape = [(100, 50), (150, -50)] + [(5_000, 0)] * 6
        readings = tuple(Reading(T0 + i * 10_000, T0 + i * 10_000 + w // 2 + off,
                                 T0 + i * 10_000 + w) for i, (w, off) in enumerate(shape))
        return ReadingsRead(method, readings, 0, T0 + 100_000)

    for method, expected in ((ReadMethod.EXTENDED, 10), (ReadMethod.BASIC, 0),
                             (ReadMethod.CLOCK_GETTIME, 0), (ReadMethod.PRECISE, 50)):
        src = source(method=method)
        running(src)
        event = poll(method)
        if method is ReadMethod.PRECISE:
            event = ReadingsRead(method, PreciseReading(T0 + 50, T0, 0), 0, T0 + 100_000)
        src.handle_event(event, 1)
        assert src.status().last_offset_ns == expected, method
    for estimator, expected in ((Estimator.MIN_WINDOW, 50), (Estimator.ROBUST, 10)):
        forced = source(method=ReadMethod.BASIC, estimator=estimator)
        running(forced)
        forced.handle_event(poll(ReadMethod.BASIC), 1)
        assert forced.status().last_offset_ns == expected


def test_extended_source_learns_the_window_slope_and_forgets_it_on_reopen() -> None:
    def poll(k: int, shift: int) -> ReadingsRead:
        # midpoint offset = 1000 + 0.4 * (window - 600) + a per-reading wobble
        readings, t = [], T0 + k * NS
        for i in range(25):
            w = 600 + (i * 37) % 300
            readings.append(Reading(t, t + w // 2 + 1_000 + shift + (2 * w) // 5 - 240 + i % 3,
                                    t + w))
            t += w + 100
        return ReadingsRead(ReadMethod.EXTENDED, tuple(readings), k * NS, T0 + k * NS + NS // 2)

    src = source()
    running(src)
    offsets = []
    for k in range(30):
        src.handle_event(poll(k, 0), k * NS + 1)
        offsets.append(src.status().last_offset_ns or 0)
        src.handle_timer((k + 1) * NS)
    assert offsets[0] >= 1_010  # first polls: plain low-quartile mean, biased by the slope
    assert all(abs(o - 1_001) <= 3 for o in offsets[-10:])  # learnt: the wobble remains
    src.handle_event(DeviceFailed(DeviceErrorKind.VANISHED, "gone", 19), 30 * NS)
    src.handle_timer(31 * NS)
    src.handle_event(opened(), 31 * NS)
    src.handle_event(poll(31, 0), 31 * NS + 1)
    assert src.status().last_offset_ns == offsets[0]  # a reopened device starts afresh


def _stepped_read(mono: int = 0) -> ReadingsRead:
    # the second reading starts before the first ended: the system clock went backwards
    readings = (Reading(T0, T0 + 5, T0 + 10), Reading(T0 + 4, T0 + 15, T0 + 20))
    return ReadingsRead(ReadMethod.EXTENDED, readings, mono, T0 + 100)


def test_a_source_whose_polls_are_all_rejected_says_so_then_recovers() -> None:
    src = source()
    running(src)
    reports: list[Report] = []
    now = 1
    for poll in range(1, REJECTIONS_BEFORE_REPORT + 10):
        acts = src.handle_event(_stepped_read(), now)
        assert not of(acts, Publish) and of(acts, SetTimer)
        reports += [a for a in acts if isinstance(a, Report)]
        if poll < REJECTIONS_BEFORE_REPORT:
            assert src.state is PtpSourceState.RUNNING  # one step during a read is no news
        now = src.deadline_ns or now
        assert src.handle_timer(now) == [ReadDevice(ReadMethod.EXTENDED, 25)]
    # reported once on entry (the worker logs it), then the count only shows in status()
    assert [r.status.state for r in reports] == [PtpSourceState.REJECTING]
    assert reports[0].status.message == (
        f"system time went backwards between readings: the system clock was stepped during "
        f"the read ({REJECTIONS_BEFORE_REPORT} polls in a row)")
    status = src.status()
    assert status.state is PtpSourceState.REJECTING
    assert status.message.endswith(f"({REJECTIONS_BEFORE_REPORT + 9} polls in a row)")
    assert status.errors == {"stepped": REJECTIONS_BEFORE_REPORT + 9} and status.samples == 0
    acts = src.handle_event(good_read(ReadMethod.EXTENDED), now)
    assert of(acts, Publish) and src.state is PtpSourceState.RUNNING
    (report,) = of(acts, Report)
    assert isinstance(report, Report) and report.status.message.startswith("recovered: reading")


def test_nonsense_device_answers_count_as_rejections() -> None:
    src = source()
    running(src)
    for i in range(REJECTIONS_BEFORE_REPORT):
        src.handle_event(DeviceFailed(DeviceErrorKind.NONSENSE, "/dev/ptp_kvm: nsec 2e9"), i)
        assert src.handle_timer(src.deadline_ns or 0) == [ReadDevice(ReadMethod.EXTENDED, 25)]
    assert src.state is PtpSourceState.REJECTING
    assert src.status().message == f"/dev/ptp_kvm: nsec 2e9 ({REJECTIONS_BEFORE_REPORT} polls in a row)"


def test_a_rejection_between_good_polls_starts_the_count_again() -> None:
    src = source()
    running(src)
    for i in range(3 * REJECTIONS_BEFORE_REPORT):
        bad = i % (REJECTIONS_BEFORE_REPORT - 1) != 0
        src.handle_event(_stepped_read() if bad else good_read(ReadMethod.EXTENDED), i)
        src.handle_timer(src.deadline_ns or 0)
        assert src.state is PtpSourceState.RUNNING


@pytest.mark.parametrize("method", [ReadMethod.EXTENDED, ReadMethod.BASIC])
def test_a_coarse_clock_with_equal_system_stamps_gives_samples(method: ReadMethod) -> None:
    # every system stamp, and the realtime read after the ioctl, is the same instant
    src = source(method=method)
    running(src)
    readings = tuple(Reading(T0, T0 + 40 + i, T0) for i in range(25))
    for poll in range(2 * REJECTIONS_BEFORE_REPORT):
        acts = src.handle_event(ReadingsRead(method, readings, poll, T0), poll)
        assert of(acts, Publish), src.status().errors
        src.handle_timer(src.deadline_ns or 0)
    assert src.state is PtpSourceState.RUNNING and src.status().errors == {}


def test_the_awaiting_table_is_walked_pair_by_pair() -> None:
    from ntpd_py.core.ptp_source import AWAITING_TRANSITIONS, Awaiting, DeviceAnswer

    from tests.fsm_walk import walk_table

    illegal = walk_table(AWAITING_TRANSITIONS, Awaiting, DeviceAnswer)
    # nothing can be asked while an answer is pending, nothing answered unasked
    assert (Awaiting.OPEN, DeviceAnswer.ASKED_READ) in illegal
    assert (Awaiting.NOTHING, DeviceAnswer.FAILED) in illegal


def test_an_illegal_answer_leaves_the_source_waiting_for_the_right_one() -> None:
    from ntpd_py.core.fsm import IllegalTransition

    src = source()
    src.start(0)
    with pytest.raises(IllegalTransition, match="'read' is not allowed in state 'open'"):
        src.handle_event(good_read(ReadMethod.BASIC), 0)
    assert src.handle_event(opened(), 0)


def test_the_first_samples_come_a_quarter_second_apart_within_the_read_budget() -> None:
    # interval 2 (4 s polls) on a device allowing 40 reads/s: the filter's start-up
    # samples do not wait 3 polls (12 s), and the burst stays within 40 reads/s
    src = source(interval=2, read_budget_per_s=40)
    read = running(src, now=0)
    counts = [read.count]
    deadlines = []
    now = 0
    for _ in range(STARTUP_BURST_SAMPLES):
        (timer,) = of(src.handle_event(good_read(read.method, read.count), now + 1_000), SetTimer)
        assert isinstance(timer, SetTimer)
        deadlines.append(timer.deadline_mono_ns)
        now = timer.deadline_mono_ns
        (read,) = of(src.handle_timer(now), ReadDevice)
        assert isinstance(read, ReadDevice)
        counts.append(read.count)
    assert deadlines == [NS // 4, NS // 2, 4 * NS]  # then the configured 4 s grid
    assert all(c <= 40 // 4 for c in counts[:STARTUP_BURST_SAMPLES])
    assert counts[-1] == 25  # the full count once polls are 4 s apart
