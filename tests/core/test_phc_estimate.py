"""core/phc_estimate.py: sign convention, estimators, window-slope correction, the Sample."""

from __future__ import annotations

import math
import random

import pytest
from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.phc import PhcReadingRejected, Reading
from ntpd_py.core.phc_estimate import (
    Estimator,
    WindowSlope,
    build_sample,
    estimate,
    reference_id,
    sample_uncertainty_s,
)

NS = 1_000_000_000
T0 = 1_795_000_000 * NS  # an instant in 2026


def test_offset_sign_is_reference_minus_local_like_ntp() -> None:
    # The PHC reads 5 µs ahead of the system clock: the local clock is behind the reference,
    # so the offset is +5 µs (the clock must move forward), as for an NTP server that is ahead.
    r = Reading(T0, T0 + 500 + 5_000, T0 + 1_000)
    assert r.offset_ns == 5_000
    # NTP: offset = ((t2 - t1) + (t3 - t4)) / 2 with t1/t4 local, t2/t3 server; a PHC read
    # is a server whose t2 = t3 = phc.
    t1, t2, t3, t4 = r.sys_before_ns, r.phc_ns, r.phc_ns, r.sys_after_ns
    assert r.offset_ns == ((t2 - t1) + (t3 - t4)) // 2
    est = estimate([r])
    sample = build_sample(est, _config(), source_id="ptp0", device_index=0,
                          mono_ns=50 * NS, realtime_ns=T0 + 2_000)
    assert sample.offset_s == pytest.approx(5e-6) and sample.offset_s > 0


def test_min_window_keeps_the_tightest_reading() -> None:
    readings = [Reading(T0, T0 + 900, T0 + 1_000), Reading(T0 + 2_000, T0 + 2_300, T0 + 2_400),
                Reading(T0 + 3_000, T0 + 3_700, T0 + 3_800)]
    est = estimate(readings)
    assert (est.offset_ns, est.window_ns, est.realtime_ns, est.used, est.total) == (
        100, 400, T0 + 2_200, 1, 3)


def test_low_quartile_mean_leaves_out_windows_over_twice_the_smallest() -> None:
    readings = [Reading(T0 + i * 10_000, T0 + i * 10_000 + w // 2 + off, T0 + i * 10_000 + w)
                for i, (w, off) in enumerate([(100, 10), (250, 900), (5_000, 0), (3_000, 0),
                                              (400, 0), (300, 0), (900, 0), (800, 0)])]
    est = estimate(readings, Estimator.LOW_QUARTILE_MEAN)  # quarter = 100 and 250 ns
    assert (est.used, est.offset_ns, est.window_ns) == (1, 10, 100)


def test_low_quartile_mean_averages_the_tightest_quarter() -> None:
    readings = [Reading(T0 + i * 10_000, T0 + i * 10_000 + w // 2 + off, T0 + i * 10_000 + w)
                for i, (w, off) in enumerate([(400, 10), (1_000, 900), (402, -20), (5_000, 0),
                                              (3_000, 0), (2_000, 0), (800, 0), (900, 0)])]
    est = estimate(readings, Estimator.LOW_QUARTILE_MEAN)
    assert est.used == 2 and est.window_ns == 402
    assert est.offset_ns == -5  # mean of +10 and -20
    assert est.realtime_ns == T0 + (200 + 20_201) // 2 + 1  # mean midpoint, rounded


@pytest.mark.parametrize(("readings", "kind"), [
    ([Reading(T0, T0, T0 + 10), Reading(T0 + 20, T0 + 25, T0 + 19)], "stepped"),
    ([Reading(T0, T0, T0 + 10), Reading(T0 + 5, T0 + 25, T0 + 30)], "stepped"),
    ([Reading(T0, T0, T0 + NS + 1)], "nonsense"),
    ([Reading(T0, T0 + 50, T0 + 10), Reading(T0 + 20, T0 + 40, T0 + 30)], "nonsense"),
    ([], "nonsense"),
])
def test_bad_polls_are_rejected_whole(readings: list[Reading], kind: str) -> None:
    with pytest.raises(PhcReadingRejected) as info:
        estimate(readings)
    assert info.value.kind == kind


def test_uncertainty_combines_precision_and_window() -> None:
    assert sample_uncertainty_s(1e-7, 0) == pytest.approx(1e-7)
    assert sample_uncertainty_s(1e-9, 1_200) == pytest.approx(math.hypot(1e-9, 1.2e-6 / 12**0.5))


def test_reference_ids() -> None:
    assert reference_id(0).to_bytes(4, "big") == b"PHC0"
    assert reference_id(7).to_bytes(4, "big") == b"PHC7"
    assert reference_id(12).to_bytes(4, "big") == b"PH12"
    assert reference_id(345).to_bytes(4, "big") == b"P345"
    assert reference_id(None).to_bytes(4, "big") == b"PHC?"


def _config(**kw: object) -> PtpSourceConfig:
    base: dict[str, object] = {"mode": "ptp", "path": "/dev/ptp0", "delay": 4e-5,
                               "interval": 2, "precision": 1e-7, "stratum": 1}
    return PtpSourceConfig.model_validate({**base, **kw})


def test_sample_carries_the_config_and_times() -> None:
    est = estimate([Reading(T0, T0 + 500 - 3_000, T0 + 1_000)])
    sample = build_sample(est, _config(), source_id="ptp0", device_index=1,
                          mono_ns=70 * NS, realtime_ns=T0 + 10_000)
    assert sample.kind is SourceKind.PTP and sample.leap is LeapIndicator.NONE
    assert sample.offset_s == pytest.approx(-3e-6)
    assert sample.delay_s == pytest.approx(1e-6)
    assert sample.root_delay_s == 4e-5 and sample.root_dispersion_s == 0.0
    assert sample.stratum == 1 and sample.poll_log2 == 2
    assert sample.reference_id.to_bytes(4, "big") == b"PHC1"
    assert sample.realtime_ns == T0 + 500
    assert sample.mono_ns == 70 * NS - 9_500  # the midpoint, 9.5 µs before the pair
    assert sample.uncertainty_s == pytest.approx(sample_uncertainty_s(1e-7, 1_000))


def test_sample_rejects_a_step_between_read_and_timestamp() -> None:
    est = estimate([Reading(T0, T0 + 500, T0 + 1_000)])
    with pytest.raises(PhcReadingRejected):
        build_sample(est, _config(), source_id="p", device_index=0, mono_ns=NS,
                     realtime_ns=T0 - 5 * NS)


def _slow_latch_poll(rng: random.Random, start: int, theta: int, slope: float) -> list[Reading]:
    """25 readings whose midpoint offset grows with the window: theta + slope * (w - 700)."""
    out, t = [], start
    for _ in range(25):
        window = 700 + int(rng.expovariate(1 / 150))
        mid = t + window // 2
        offset = theta + round(slope * (window - 700)) + rng.randint(-3, 3)
        out.append(Reading(t, mid + offset, t + window))
        t += window + 200
    return out


def test_window_slope_learns_the_latch_position_and_removes_the_scatter() -> None:
    rng = random.Random(7)
    tracker = WindowSlope()
    plain, corrected = [], []
    for k in range(60):
        poll = _slow_latch_poll(rng, T0 + k * NS // 16, 5_000, 0.3)
        plain.append(estimate(poll, Estimator.LOW_QUARTILE_MEAN).offset_ns)
        corrected.append(estimate(poll, Estimator.WINDOW_CORRECTED, tracker).offset_ns)
        if k < WindowSlope.WARMUP_POLLS:
            assert tracker.slope == 0.0 and corrected[-1] == plain[-1]
        tracker.update(poll)
    assert tracker.slope == pytest.approx(0.3, abs=0.02)
    assert 690 <= tracker.reference_window_ns <= 720  # tracks the smallest windows
    late_plain, late_corr = plain[20:], corrected[20:]
    spread = max(late_corr) - min(late_corr)
    assert spread < (max(late_plain) - min(late_plain)) / 3
    # corrected to the reference window, not to zero window: the convention stays
    assert abs(sum(late_corr) / len(late_corr) - 5_000) < 15


def test_window_slope_gives_up_outside_the_physical_bound() -> None:
    rng = random.Random(3)
    tracker = WindowSlope()
    for k in range(20):
        tracker.update(_slow_latch_poll(rng, T0 + k * NS, 0, 1.5))
    assert tracker.slope == 0.0  # a latch inside the window cannot give more than 0.5


def test_window_slope_needs_three_comparable_readings() -> None:
    tracker = WindowSlope()
    for k in range(20):
        tracker.update([Reading(T0 + k, T0 + k + 50, T0 + k + 100)])
    assert tracker.slope == 0.0 and tracker.reference_window_ns == 100


def test_window_corrected_without_a_tracker_is_the_low_quartile_mean() -> None:
    poll = _slow_latch_poll(random.Random(1), T0, 100, 0.2)
    assert estimate(poll, Estimator.WINDOW_CORRECTED) == estimate(
        poll, Estimator.LOW_QUARTILE_MEAN)


@pytest.mark.parametrize("estimator", list(Estimator))
def test_equal_system_timestamps_are_legal(estimator: Estimator) -> None:
    # A coarse CLOCK_REALTIME (or an emulator) gives the same system stamp around several
    # reads: only strictly decreasing system time means the clock was stepped.
    coarse = [Reading(T0, T0 + 100 + i, T0) for i in range(4)]  # zero windows, equal stamps
    est = estimate(coarse, estimator, WindowSlope())
    assert est.window_ns == 0 and est.offset_ns in range(100, 104)
    touching = [Reading(T0, T0 + 5, T0 + 10), Reading(T0 + 10, T0 + 15, T0 + 20)]
    assert estimate(touching, estimator, WindowSlope()).offset_ns == 0
    same_phc = [Reading(T0, T0 + 7, T0 + 10), Reading(T0 + 10, T0 + 7, T0 + 20)]
    assert estimate(same_phc, Estimator.MIN_WINDOW).total == 2


def test_the_simulators_time_backwards_fault_gives_polls_the_source_rejects() -> None:
    from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock
    from ntpd_py.core.sim.phc import PhcModel, PhcParams, phc_sample

    clock = SimClock(LocalClockModel(LocalClockParams(), 1), real_epoch_ns=T0, mono_epoch_ns=0)
    model = PhcModel("/dev/ptp0", PhcParams(readings=4, window_s=1e-6, time_backwards=1.0), 1)
    raw = model.read(NS, 0, clock)
    assert raw is not None
    with pytest.raises(PhcReadingRejected) as info:
        estimate([Reading(*r) for r in raw])
    assert info.value.kind == "stepped"
    with pytest.raises(ValueError, match="backwards"):
        phc_sample("ptp0", raw, precision_s=1e-9, mono_minus_real_ns=0)
    fine = PhcModel("/dev/ptp0", PhcParams(readings=4, window_s=1e-6), 1).read(NS, 0, clock)
    assert fine is not None and estimate([Reading(*r) for r in fine]).total == 4
