"""Steering: frequency, slews, steps, and the three panic thresholds."""

from __future__ import annotations

import pytest
from ntpd_py.core.config import AlgorithmConfig, StepThreshold, SynchronizationConfig
from ntpd_py.core.steer import Steerer

S = 1_000_000_000


def steerer(**kwargs: object) -> Steerer:
    return Steerer(SynchronizationConfig.model_validate(kwargs))


def test_step_beyond_threshold_sets_frequency_too() -> None:
    s = steerer()
    d = s.update(0.05, 20e-6, 0)
    assert d.step_s == 0.05 and d.panic is None and d.slew_end_ns is None
    assert d.freq == pytest.approx(20e-6)
    assert s.steps == 1 and s.accumulated_s == pytest.approx(0.05) and not s.in_startup


def test_small_offset_is_slewed_and_the_slew_ends() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)  # first update: no interval known yet, 8 s at most
    before = s.freq_in_force  # the slope below is measured with this in force
    d = s.update(2e-6, 1e-6, 1 * S)
    base = before + 1e-6
    assert d.step_s == 0.0
    assert d.freq > base and d.slew_end_ns is not None
    assert d.slew_end_ns - 1 * S <= S // 4 + 1  # a quarter of the update interval
    corrected = (d.freq - base) * (d.slew_end_ns - 1 * S) / S
    assert corrected == pytest.approx(2e-6, rel=1e-6)
    assert s.end_slew(d.slew_end_ns - 1) is None
    assert s.end_slew(d.slew_end_ns) == pytest.approx(base)
    assert s.freq_in_force == pytest.approx(base)


def test_slew_lasts_until_the_next_sample_and_its_end_is_only_a_fallback() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)
    before = s.freq_in_force
    d = s.update(2e-6, 0.0, 1 * S, next_update_ns=2 * S)
    # the whole offset is slewed away by the next expected update, 1 s from now...
    assert (d.freq - before) * 1.0 == pytest.approx(2e-6, rel=1e-6)
    # ...which re-plans it; the slew's own end comes half a slew later, only in
    # case that update does not arrive
    assert d.slew_end_ns == 1 * S + S + S // 2
    # (the slope is measured with the slew's frequency in force: back to `before`)
    again = s.update(1e-7, before - d.freq, 2 * S, next_update_ns=3 * S)
    assert again.freq - before == pytest.approx(1e-7, rel=1e-6)
    # a rate that hits its limit needs longer than the time to the next update:
    # then the slew must end exactly, so the end is not deferred
    big = s.update(1e-3, before - again.freq, 3 * S, next_update_ns=4 * S)
    rate = s.algo.slew_maximum_frequency_offset
    assert big.freq - before == pytest.approx(rate, rel=1e-6)
    assert big.step_s == 0.0 and big.slew_end_ns == 3 * S + int(1e-3 / (big.freq - before) * S)


def test_slew_rate_and_total_frequency_are_bounded() -> None:
    algo = AlgorithmConfig()
    s = steerer()
    d = s.update(-9e-3, -400e-6, 0)
    assert d.step_s == 0.0
    assert abs(d.freq) <= algo.maximum_frequency_steer + 1e-15
    assert d.freq - (-400e-6) >= -algo.slew_maximum_frequency_offset - 1e-15
    assert d.slew_end_ns is not None and d.slew_end_ns > 0


def test_frequency_is_clamped() -> None:
    s = steerer()
    assert s.update(0.0, 900e-6, 0).freq == pytest.approx(495e-6)


def test_startup_threshold_refuses_a_large_backward_step() -> None:
    s = steerer()
    d = s.update(-2 * 86400.0, 0.0, 0)
    assert d.panic is not None and d.step_s == 0.0
    assert "startup-step-panic-threshold" in d.panic and "backward" in d.panic
    assert "-172800" in d.panic and "86400" in d.panic
    assert s.steps == 0


def test_startup_allows_any_forward_step_by_default() -> None:
    assert steerer().update(10 * 86400.0, 0.0, 0).step_s == 10 * 86400.0


def test_single_step_threshold_after_startup() -> None:
    s = steerer()
    s.update(1e-4, 0.0, 0)
    d = s.update(1200.0, 0.0, 1 * S)
    assert d.panic is not None and "single-step-panic-threshold" in d.panic
    assert "forward limit 1000 s" in d.panic
    assert s.update(900.0, 0.0, 2 * S).step_s == 900.0


def test_accumulated_threshold() -> None:
    s = steerer(**{"accumulated-step-panic-threshold": 1.0})
    s.update(1e-4, 0.0, 0)
    assert s.update(0.6, 0.0, 1 * S).step_s == 0.6
    d = s.update(-0.6, 0.0, 2 * S)
    assert d.panic is not None and "accumulated-step-panic-threshold" in d.panic


def test_unlimited_thresholds() -> None:
    s = Steerer(SynchronizationConfig(single_step_panic_threshold=StepThreshold.unlimited()))
    s.update(1e-4, 0.0, 0)
    assert s.update(-1e6, 0.0, 1 * S).step_s == -1e6


def test_initial_frequency_is_kept_and_clamped() -> None:
    assert Steerer(SynchronizationConfig(), freq=12e-6).freq_in_force == 12e-6
    assert Steerer(SynchronizationConfig(), freq=1.0).freq_in_force == pytest.approx(495e-6)


def _slew_s(d_freq: float, base: float, offset_s: float) -> float:
    """How long the planned slew takes to remove ``offset_s``."""
    return offset_s / (d_freq - base)


def test_long_poll_noise_estimate_is_spread_over_several_polls() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)
    base = s.freq_in_force
    # NTP: poll 64 s; an estimate of 2 µs with sigma 5 µs is mostly noise, the
    # frequency known to 0.01 ppm (noise time 500 s): spread over 4 polls, not 1
    d = s.update(2e-6, 0.0, 1 * S, next_update_ns=17 * S, poll_interval_s=64.0,
                 offset_sigma_s=5e-6, freq_sigma=1e-8)
    assert _slew_s(d.freq, base, 2e-6) == pytest.approx(4 * 64.0, rel=1e-6)


def test_long_poll_noise_time_while_the_frequency_is_poorly_known() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)
    base = s.freq_in_force
    # frequency known to 0.05 ppm only: noise time 5 µs / 5e-8 = 100 s
    d = s.update(2e-6, 0.0, 1 * S, next_update_ns=17 * S, poll_interval_s=64.0,
                 offset_sigma_s=5e-6, freq_sigma=5e-8)
    assert _slew_s(d.freq, base, 2e-6) == pytest.approx(100.0, rel=1e-6)


def test_long_poll_offset_beyond_its_noise_keeps_the_poll_interval() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)
    base = s.freq_in_force
    d = s.update(50e-6, 0.0, 1 * S, next_update_ns=17 * S, poll_interval_s=64.0,
                 offset_sigma_s=5e-6, freq_sigma=1e-8)  # 10 sigma: a real offset
    assert _slew_s(d.freq, base, 50e-6) == pytest.approx(64.0, rel=1e-6)


def test_short_poll_ignores_the_noise_time() -> None:
    s = steerer()
    s.update(1e-3, 0.0, 0)
    base = s.freq_in_force
    # PHC: poll 1 s, the slew still ends at the next sample
    d = s.update(20e-9, 0.0, 1 * S, next_update_ns=2 * S, poll_interval_s=1.0,
                 offset_sigma_s=30e-9, freq_sigma=1e-9)
    assert _slew_s(d.freq, base, 20e-9) == pytest.approx(1.0, rel=1e-6)
