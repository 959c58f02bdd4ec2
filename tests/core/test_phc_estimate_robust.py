"""core/phc_estimate.py ROBUST: properties that hold whatever the delay model (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.phc import Reading
from ntpd_py.core.phc_estimate import (
    OUTLIER_WINDOWS,
    Estimator,
    WindowSlope,
    build_sample,
    estimate,
)

NS = 1_000_000_000
T0 = 1_795_000_000 * NS

# (window, offset of the PHC from the window's midpoint), ns
shapes = st.lists(st.tuples(st.integers(0, 5_000), st.integers(-3_000, 3_000)),
                  min_size=1, max_size=25)


def poll(shape: list[tuple[int, int]], at: int = T0, phc_shift: int = 0) -> list[Reading]:
    out, t = [], at
    for w, off in shape:
        out.append(Reading(t, t + w // 2 + off + phc_shift, t + w))
        t += w + 10_000  # more than any offset difference: the PHC never goes backwards
    return out


@given(shapes)
def test_estimate_lies_within_the_readings_it_used(shape: list[tuple[int, int]]) -> None:
    readings = poll(shape)
    est = estimate(readings, Estimator.ROBUST)
    offsets = [r.offset_ns for r in readings]
    assert min(offsets) - 1 <= est.offset_ns <= max(offsets) + 1
    assert 1 <= est.used <= est.total == len(readings)
    assert readings[0].sys_before_ns <= est.realtime_ns <= readings[-1].sys_after_ns


@given(shapes, st.integers(-10**12, 10**12), st.integers(-10**9, 10**9))
def test_shifting_the_phc_or_the_instant_shifts_only_what_it_should(
        shape: list[tuple[int, int]], shift: int, later: int) -> None:
    base = estimate(poll(shape), Estimator.ROBUST)
    moved = estimate(poll(shape, at=T0 + later, phc_shift=shift), Estimator.ROBUST)
    assert abs(moved.offset_ns - (base.offset_ns + shift)) <= 1
    assert abs(moved.realtime_ns - (base.realtime_ns + later)) <= 1
    assert moved.used == base.used and moved.window_ns == base.window_ns


@given(st.lists(st.tuples(st.integers(100, 180), st.integers(-50, 50)), min_size=4, max_size=18),
       st.lists(st.tuples(st.integers(10_000, 100_000), st.integers(-5_000, 5_000)),
                min_size=1, max_size=6))
def test_delayed_readings_are_left_out_wherever_they_fall(
        good: list[tuple[int, int]], delayed: list[tuple[int, int]]) -> None:
    # delayed readings (preemption, an SMI: windows over OUTLIER_WINDOWS × the narrow
    # ones) are interleaved anywhere; the estimate uses only the good ones
    # good windows within OUTLIER_WINDOWS × the smallest, delayed ones far beyond
    assert OUTLIER_WINDOWS * 100 >= 180 and OUTLIER_WINDOWS * 180 < 10_000
    mixed = list(good)
    for i, d in enumerate(delayed):
        mixed.insert((i * 7) % (len(mixed) + 1), d)
    est = estimate(poll(mixed), Estimator.ROBUST)
    assert est.used == len(good)
    assert min(o for _, o in good) - 1 <= est.offset_ns <= max(o for _, o in good) + 1


@given(st.integers(0, 3_000), st.lists(st.integers(-2_000, 2_000), min_size=1, max_size=25))
def test_equal_windows_give_the_plain_mean(window: int, offsets: list[int]) -> None:
    # the white-noise PHC (or a clock whose stamps are coarser than the read): no window
    # says anything, every reading counts the same
    est = estimate(poll([(window, o) for o in offsets]), Estimator.ROBUST)
    mean = sum(o for o in offsets) / len(offsets)
    assert abs(est.offset_ns - mean) <= 1 + window  # midpoints rounded to whole ns


@settings(max_examples=50)
@given(shapes)
def test_the_sample_sigma_is_measured_but_never_below_its_floor(
        shape: list[tuple[int, int]]) -> None:
    config = PtpSourceConfig(mode="ptp", path="/dev/ptp0", precision=50e-9)
    est = estimate(poll(shape), Estimator.ROBUST)
    sample = build_sample(est, config, source_id="ptp0", device_index=0,
                          mono_ns=NS, realtime_ns=est.realtime_ns)
    assert sample.uncertainty_s >= 5e-9  # a tenth of the configured per-reading precision
    if est.sigma_ns is not None:
        assert sample.uncertainty_s == pytest.approx(max(est.sigma_ns / NS, 5e-9))


def test_the_window_slope_is_applied_relative_to_the_typical_window() -> None:
    # offsets 0.3 ns per ns of window above 100 ns: once learnt, wide readings no longer
    # pull the estimate up
    slope = WindowSlope()
    shape = [(100 + 20 * i, (3 * 20 * i) // 10) for i in range(25)]
    first = estimate(poll(shape), Estimator.ROBUST, slope)
    for k in range(20):
        slope.update(poll(shape, at=T0 + k * NS))
    learnt = estimate(poll(shape), Estimator.ROBUST, slope)
    assert first.offset_ns > 10 and abs(learnt.offset_ns) <= 2
