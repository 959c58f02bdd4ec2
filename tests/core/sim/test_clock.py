"""The simulated local clock and the keyed random numbers behind the world."""

from __future__ import annotations

import math
import statistics

import pytest
from ntpd_py.core.sim import rng
from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock

S = 1_000_000_000


def test_draws_are_pure_functions_of_their_key() -> None:
    assert rng.normal(1, "a", "x", 5) == rng.normal(1, "a", "x", 5)
    assert rng.normal(1, "a", "x", 5) != rng.normal(1, "a", "x", 6)
    assert rng.normal(1, "a", "x", 5) != rng.normal(2, "a", "x", 5)
    assert rng.normal(1, "a", "x", 5) != rng.normal(1, "b", "x", 5)
    assert 0.0 < rng.uniform(1, "a", "x", 0) < 1.0
    assert rng.exponential(1, "a", "x", 0, 0.0) == 0.0


def test_distributions() -> None:
    normals = [rng.normal(3, "n", "s", i, 2.0) for i in range(20000)]
    assert statistics.fmean(normals) == pytest.approx(0.0, abs=0.05)
    assert statistics.pstdev(normals) == pytest.approx(2.0, rel=0.03)
    expo = [rng.exponential(3, "e", "s", i, 1e-4) for i in range(20000)]
    assert statistics.fmean(expo) == pytest.approx(1e-4, rel=0.03) and min(expo) > 0


def params(**kw: float) -> LocalClockParams:
    return LocalClockParams(**kw)  # type: ignore[arg-type]


def test_model_is_the_same_whatever_the_evaluation_order() -> None:
    p = params(offset_s=0.05, frequency=20e-6, wander=1e-9)
    forward, backward = LocalClockModel(p, 9), LocalClockModel(p, 9)
    times = [int(x * S) for x in (0.5, 10, 1000.25, 3600)]
    ahead = [forward.integrated(t) for t in times]
    behind = [backward.integrated(t) for t in reversed(times)][::-1]
    assert ahead == behind
    assert LocalClockModel(p, 10).integrated(3600 * S) != ahead[-1]


def test_integral_matches_frequency() -> None:
    p = params(frequency=5e-6, wander=1e-9, temperature_amplitude=1e-6, temperature_period_s=600)
    m = LocalClockModel(p, 4)
    for t in (10.25, 300.5, 1234.75):
        t_ns, h = int(t * S), S // 1000
        derivative = (m.integrated(t_ns + h) - m.integrated(t_ns - h)) / (2 * h / S)
        assert derivative == pytest.approx(m.frequency(t_ns), rel=1e-4)


def test_random_walk_has_the_configured_step() -> None:
    m = LocalClockModel(params(wander=1e-9), 2)
    steps = [m.frequency((k + 1) * S) - m.frequency(k * S) for k in range(5000)]
    assert statistics.pstdev(steps) == pytest.approx(1e-9, rel=0.05)


def test_clock_follows_frequency_corrections_and_steps() -> None:
    clock = SimClock(LocalClockModel(params(offset_s=0.01, frequency=20e-6), 1),
                     real_epoch_ns=10**18, mono_epoch_ns=5 * S)
    assert clock.error(0) == pytest.approx(0.01)
    assert clock.error(10 * S) == pytest.approx(0.01 + 200e-6)
    clock.set_frequency(10 * S, -20e-6)
    assert clock.error(20 * S) == pytest.approx(0.01 + 200e-6 - 4e-9, abs=1e-12)
    assert clock.rate_error(20 * S) == pytest.approx(-4e-10, abs=1e-15)  # (1+f)(1-f)-1
    mono_before = clock.mono_ns(20 * S)
    clock.step(-10_200_000)
    assert clock.error(20 * S) == pytest.approx(-4e-9, abs=1e-12)
    assert clock.mono_ns(20 * S) == mono_before  # steps do not move CLOCK_MONOTONIC
    assert clock.realtime_ns(20 * S) - 10**18 == 20 * S - 4


def test_true_time_at_mono_inverts_the_monotonic_clock() -> None:
    clock = SimClock(LocalClockModel(params(frequency=300e-6, wander=1e-9), 3),
                     real_epoch_ns=0, mono_epoch_ns=S)
    for target in (S + 7 * S, S + 1234 * S + 17):
        t = clock.true_time_at_mono(target, 0)
        assert clock.mono_ns(t) >= target > clock.mono_ns(t - 1)
    assert clock.true_time_at_mono(0, 5 * S) == 5 * S  # already past


def test_error_is_finite_after_many_corrections() -> None:
    clock = SimClock(LocalClockModel(params(frequency=1e-5, wander=1e-9), 1), real_epoch_ns=0,
                     mono_epoch_ns=0)
    for k in range(2000):
        clock.set_frequency(k * S, -1e-5 + (k % 7) * 1e-9)
    assert math.isfinite(clock.error(2000 * S))


def test_discipline_can_be_shared_between_copies_of_the_world() -> None:
    p = params(offset_s=0.02, frequency=1e-5, wander=1e-9)
    here = SimClock(LocalClockModel(p, 5), real_epoch_ns=0, mono_epoch_ns=0)
    there = SimClock(LocalClockModel(p, 5), real_epoch_ns=0, mono_epoch_ns=0)
    here.set_frequency(3 * S, -1e-5)
    here.step(-20_000_000)
    there.load_discipline(here.discipline())
    for t in (3 * S, 50 * S + 7):
        assert there.realtime_ns(t) == here.realtime_ns(t)
        assert there.mono_ns(t) == here.mono_ns(t)


def test_a_frequency_change_leaves_a_phase_step_when_the_kernel_is_modelled_so() -> None:
    """`frequency-change-noise`: each change of the correction (not a repeat of the same
    value) moves the phase by a keyed normal draw; none by default."""
    def world(noise: float) -> SimClock:
        params = LocalClockParams(frequency_change_noise_s=noise)
        return SimClock(LocalClockModel(params, seed=4), real_epoch_ns=0, mono_epoch_ns=0)

    plain, glitchy, again = world(0.0), world(20e-9), world(20e-9)
    jumps = []
    for k in range(1, 401):
        freq = 1e-9 * (k % 2)  # 0, 1 ppb, 0, ... : every call a change
        for clock in (plain, glitchy, again):
            before = clock.error(k * S)
            clock.set_frequency(k * S, freq)
            if clock is glitchy:
                jumps.append(clock.error(k * S) - before)
            else:
                assert clock is again or clock.error(k * S) == before
    assert glitchy.error(401 * S) == again.error(401 * S)  # repeatable per seed
    assert statistics.pstdev(jumps) == pytest.approx(20e-9, rel=0.15)
    before = glitchy.error(500 * S)
    glitchy.set_frequency(500 * S, glitchy.correction)  # the same value: not a change
    assert glitchy.error(500 * S) == before
