"""The slew planner: smooth, bounded, and done by the next sample when the bound allows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.steer import MIN_SLEW_S, SHORT_POLL_S, Steerer, plan_slew

S = 1_000_000_000

offsets = st.floats(min_value=-0.0099, max_value=0.0099, allow_nan=False).filter(
    lambda v: abs(v) > 1e-12
)
durations = st.floats(min_value=0.0, max_value=4096.0, allow_nan=False)
rates = st.floats(min_value=1e-7, max_value=500e-6, allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(offsets, durations, rates)
def test_plan_never_exceeds_the_bound_and_removes_the_offset(
    offset: float, wanted: float, max_rate: float
) -> None:
    plan = plan_slew(offset, wanted, max_rate)
    assert abs(plan.rate) <= max_rate * (1 + 1e-12)
    assert (plan.rate > 0) == (offset > 0)
    # the whole offset, no more, no less
    assert plan.rate * plan.duration_s == pytest.approx(offset, rel=1e-9)
    # never shorter than asked (the burst rule) ...
    assert plan.duration_s >= max(wanted, MIN_SLEW_S) * (1 - 1e-12)
    # ... and done by then whenever the bound allows it
    if abs(offset) / max(wanted, MIN_SLEW_S) <= max_rate:
        assert not plan.rate_limited
        assert plan.duration_s == pytest.approx(max(wanted, MIN_SLEW_S), rel=1e-9)
    else:
        assert plan.rate_limited and abs(plan.rate) == max_rate


def test_nothing_to_slew() -> None:
    plan = plan_slew(0.0, 16.0, 200e-6)
    assert plan.rate == 0.0 and plan.duration_s == 0.0


@settings(max_examples=300, deadline=None)
@given(
    offsets,
    st.floats(min_value=0.01, max_value=64.0),  # until the next expected sample
    st.sampled_from([1.0, 2.0, 4.0, 16.0, 64.0, 1024.0]),  # shortest poll interval in use
    st.floats(min_value=1.0, max_value=500.0),  # max-slew-rate-ppm
    st.floats(min_value=-100e-6, max_value=100e-6),  # base frequency
)
def test_steerer_slews_smoothly(
    offset: float, until_next: float, poll: float, max_ppm: float, base: float
) -> None:
    s = Steerer(SynchronizationConfig.model_validate({"max-slew-rate-ppm": max_ppm}), freq=base)
    now = 100 * S
    d = s.update(offset, 0.0, now, now + int(until_next * S), poll)
    assert d.step_s == 0.0 and d.slew_end_ns is not None
    rate = d.freq - base
    # never beyond the configured maximum (nor ntpd-rs's slew-maximum-frequency-offset)
    assert abs(rate) <= min(max_ppm * 1e-6, 200e-6) * (1 + 1e-9) + 1e-15
    # never a burst shorter than the poll interval or the time to the next sample;
    # with PHC-like polling, just until the next sample (8 s at most)
    wanted = max(until_next, poll) if poll > SHORT_POLL_S else min(until_next, 8.0)
    assert abs(rate) <= abs(offset) / wanted * (1 + 1e-9) + 1e-15
    # the whole offset is corrected: by then when the bound allows, else at the bound
    if abs(offset) / wanted <= max_ppm * 1e-6 * (1 - 1e-9) and abs(offset) / wanted < 200e-6:
        assert rate * wanted == pytest.approx(offset, rel=1e-6, abs=1e-15)
        # the slew's own end is only a fallback, after the next sample is due
        assert d.slew_end_ns >= now + int(wanted * S)
    else:
        cap = min(max_ppm * 1e-6, 200e-6)
        assert abs(rate) == pytest.approx(cap, rel=1e-9)
        if abs(offset) / wanted > cap * (1 + 1e-6):
            # beyond the bound, the slew at the bound ends when the offset is gone (at the
            # bound exactly, either reading of the boundary removes it in time)
            assert rate * (d.slew_end_ns - now) / S == pytest.approx(offset, rel=1e-6)


def test_many_sources_do_not_shorten_the_slew() -> None:
    """Four servers polled every 64 s update every few seconds: the slew still lasts 64 s."""
    s = Steerer(SynchronizationConfig())
    d = s.update(8e-6, 0.0, 0, next_update_ns=3 * S, poll_interval_s=64.0)
    assert d.freq == pytest.approx(8e-6 / 64.0, rel=1e-9)
    # the next update (3 s later) re-plans what is left over another poll interval
    left = 8e-6 - d.freq * 3.0
    # (the slope is measured with the slew in force: the base frequency is still 0)
    again = s.update(left, -d.freq, 3 * S, next_update_ns=7 * S, poll_interval_s=64.0)
    assert again.freq == pytest.approx(left / 64.0, rel=1e-9)


def test_one_second_polling_still_slews_within_the_second() -> None:
    s = Steerer(SynchronizationConfig())
    d = s.update(50e-9, 0.0, 0, next_update_ns=S, poll_interval_s=1.0)
    assert d.freq == pytest.approx(50e-9, rel=1e-9)


def test_phc_polling_slews_until_the_next_sample() -> None:
    """An NTP sample 0.3 s before the next PHC sample: done by that PHC sample."""
    s = Steerer(SynchronizationConfig())
    d = s.update(30e-9, 0.0, 0, next_update_ns=3 * S // 10, poll_interval_s=1.0)
    assert d.freq == pytest.approx(100e-9, rel=1e-9)


def test_max_slew_rate_bounds_a_large_offset() -> None:
    s = Steerer(SynchronizationConfig.model_validate({"max-slew-rate-ppm": 50.0}))
    d = s.update(5e-3, 0.0, 0, next_update_ns=16 * S, poll_interval_s=16.0)
    assert d.step_s == 0.0 and d.freq == pytest.approx(50e-6, rel=1e-9)
    assert d.slew_end_ns == int(5e-3 / d.freq * S)  # exactly when the offset is gone: 100 s


def test_steps_are_unchanged_by_the_slew_bound() -> None:
    s = Steerer(SynchronizationConfig.model_validate({"max-slew-rate-ppm": 1.0}))
    d = s.update(0.05, 0.0, 0, next_update_ns=S, poll_interval_s=1.0)
    assert d.step_s == 0.05


@pytest.mark.parametrize("bad", [0, -1.0, 501.0, "fast", float("nan")])
def test_max_slew_rate_is_validated(bad: object) -> None:
    from ntpd_py.core.config_load import load_config_text

    value = '"fast"' if isinstance(bad, str) else ("nan" if bad != bad else repr(bad))
    with pytest.raises(ConfigError) as info:
        load_config_text(
            f"[synchronization]\nmax-slew-rate-ppm = {value}\n"
            '[[source]]\nmode = "server"\naddress = "127.0.0.1"\n',
            "test.toml",
        )
    assert "max-slew-rate-ppm" in str(info.value)
