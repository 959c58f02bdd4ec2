"""core/sim/phc.py reading-level models: readings formed as the kernel forms them."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from ntpd_py.core.phc import PhcReadingRejected, Reading
from ntpd_py.core.phc_estimate import Estimator, WindowSlope, estimate
from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock
from ntpd_py.core.sim.phc import PhcModel, PhcParams

NS = 1_000_000_000
EPOCH = 1_768_435_200 * NS


def clock() -> SimClock:
    return SimClock(LocalClockModel(LocalClockParams(), 1), real_epoch_ns=EPOCH, mono_epoch_ns=NS)


def model(**kw: object) -> PhcModel:
    return PhcModel("/dev/ptp0", PhcParams(**kw), 1)  # type: ignore[arg-type]


EXT = dict(method="extended", readings=25, delay_up_s=100e-9, delay_down_s=100e-9, gap_s=50e-9)


def test_basic_readings_share_their_system_stamps() -> None:
    raw = model(**{**EXT, "method": "basic"}).read(5 * NS, 0, clock())
    assert raw is not None and len(raw) == 25
    assert all(a[2] == b[0] for a, b in itertools.pairwise(raw))  # sys, phc, sys, phc, ..., sys
    assert all(b <= p <= a for b, p, a in raw)  # the PHC (true time here) latched inside


def _neighbour_window_correlation(m: PhcModel) -> float:
    pairs = []
    for i in range(300):
        raw = m.read(i * NS, i, clock()) or []
        windows = [a - b for b, _, a in raw]
        pairs += list(itertools.pairwise(windows))
    return statistics.correlation([a for a, _ in pairs], [b for _, b in pairs])


def test_basic_stamp_jitter_widens_one_reading_and_narrows_the_next() -> None:
    basic = {**EXT, "method": "basic", "delay_dist": "gamma", "delay_shape": 4.0,
             "delay_up_s": 600e-9, "delay_down_s": 400e-9}
    jittery = model(**basic, stamp_jitter_s=300e-9)
    raw = jittery.read(5 * NS, 0, clock())
    assert raw is not None and len(raw) == 25
    assert all(a[2] == b[0] for a, b in itertools.pairwise(raw))  # still shared stamps
    assert all(b <= p <= a for b, p, a in raw)  # a stamp never passes a latch
    # independent transits: neighbouring windows unrelated; a shared stamp that lands
    # early or late makes them anticorrelated
    assert abs(_neighbour_window_correlation(model(**basic))) < 0.05
    assert _neighbour_window_correlation(jittery) < -0.1  # about -0.16 expected


def test_extended_readings_are_separate_triplets() -> None:
    raw = model(**EXT).read(5 * NS, 0, clock())
    assert raw is not None
    assert all(b[0] - a[2] == 50 for a, b in itertools.pairwise(raw))  # the gap, nothing shared
    assert len({r[2] - r[0] for r in raw}) > 10  # windows vary from reading to reading


def test_precise_is_one_cross_timestamp_with_its_own_noise() -> None:
    m = model(method="precise", precise_noise_s=20e-9, readings=25)
    offsets = []
    for i in range(400):
        raw = m.read(i * NS, i, clock())
        assert raw is not None and len(raw) == 1 and raw[0][0] == raw[0][2]
        offsets.append(raw[0][1] - raw[0][0])
    assert 15 < statistics.pstdev(offsets) < 25


@pytest.mark.parametrize(("dist", "shape", "mean"), [
    ("exponential", 1.0, 70.7e-9), ("gamma", 6.0, 173.2e-9)])
def test_per_reading_offset_sigma_is_what_the_scenarios_say(
        dist: str, shape: float, mean: float) -> None:
    m = model(**{**EXT, "delay_dist": dist, "delay_shape": shape,
                 "delay_up_s": mean, "delay_down_s": mean})
    errors = [Reading(*r).offset_ns for i in range(200) for r in (m.read(i * NS, i, clock()) or [])]
    assert 45 < statistics.pstdev(errors) < 55  # 50 ns per reading, as the files say
    assert abs(statistics.fmean(errors)) < 3


def test_granularity_truncates_stamps_and_allows_equal_ones() -> None:
    m = model(**{**EXT, "method": "basic", "granularity_s": 1e-6})
    raw = m.read(5 * NS + 123, 0, clock())
    assert raw is not None
    assert all(r[0] % 1000 == 0 and r[2] % 1000 == 0 for r in raw)
    assert any(r[0] == r[2] for r in raw)  # zero windows happen
    est = estimate([Reading(*r) for r in raw], Estimator.ROBUST)
    assert abs(est.offset_ns) < 1000  # still within the clock's resolution


def test_read_budget_caps_readings_per_poll() -> None:
    m = model(**{**EXT, "max_reads_per_s": 10})
    assert len(m.read(0, 0, clock(), poll_s=1.0) or []) == 10
    assert len(m.read(0, 1, clock(), poll_s=4.0) or []) == 25
    assert len(m.read(0, 2, clock(), poll_s=1 / 64) or []) == 1


def test_spikes_are_rare_and_long() -> None:
    m = model(**{**EXT, "spike_probability": 0.05, "spike_min_s": 10e-6, "spike_max_s": 100e-6})
    windows = [r[2] - r[0] for i in range(100) for r in (m.read(i * NS, i, clock()) or [])]
    long = [w for w in windows if w > 5_000]
    assert 0.05 < len(long) / len(windows) < 0.15  # two directions, 5 % each
    assert all(10_000 <= w <= 202_000 for w in long)  # 10-100 µs, both directions at most


def test_asymmetry_makes_the_offset_grow_with_the_window() -> None:
    m = model(**{**EXT, "delay_up_s": 150e-9, "delay_down_s": 30e-9})
    slope = WindowSlope()
    for i in range(60):
        slope.update([Reading(*r) for r in (m.read(i * NS, i, clock()) or [])])
    # a late latch: the midpoint is before it, the PHC ahead; more so in slow readings
    assert slope.slope > 0.1


def test_time_backwards_in_a_reading_level_read_is_rejected() -> None:
    for method in ("basic", "extended"):
        raw = model(**{**EXT, "method": method, "time_backwards": 1.0}).read(NS, 0, clock())
        assert raw is not None
        with pytest.raises(PhcReadingRejected):
            estimate([Reading(*r) for r in raw], Estimator.ROBUST)


def test_robust_is_never_much_worse_than_any_other_estimator_on_any_model() -> None:
    models = {
        "exponential": EXT,
        "gamma": {**EXT, "delay_dist": "gamma", "delay_shape": 6.0,
                  "delay_up_s": 173e-9, "delay_down_s": 173e-9},
        "asymmetric": {**EXT, "delay_up_s": 100e-9, "delay_down_s": 40e-9},
        "basic": {**EXT, "method": "basic", "granularity_s": 10e-9},
        "spiky": {**EXT, "spike_probability": 0.03, "spike_min_s": 10e-6, "spike_max_s": 1e-4},
        "white": {"noise_s": 50e-9, "readings": 25, "window_s": 200e-9},
    }
    for name, kw in models.items():
        m = model(**kw)
        sd: dict[Estimator, float] = {}
        for est in Estimator:
            slope, errs = WindowSlope(), []
            for i in range(300):
                rs = [Reading(*r) for r in (m.read(i * NS, i, clock()) or [])]
                errs.append(estimate(rs, est, slope).offset_ns)
                slope.update(rs)
            # RMS about the truth (0): a bias counts as much as scatter
            sd[est] = math.sqrt(statistics.fmean(e * e for e in errs[20:]))
        best = min(sd.values())
        assert sd[Estimator.ROBUST] <= 1.15 * best + 1.0, (name, sd)
