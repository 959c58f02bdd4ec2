"""The 2-state Kalman arithmetic: prediction, update, merge, control input."""

from __future__ import annotations

import math

import pytest
from ntpd_py.core.kalman import Kalman2, Prediction, chi1_tail, merge

S = 1_000_000_000


def test_prediction_split_into_two_is_the_same_as_one() -> None:
    k = Kalman2(0, 1e-3, 2e-6, 1e-12, 1e-15, 1e-14)
    once = k.predicted(10 * S, 1e-16)
    k.predict(4 * S, 1e-16)
    k.predict(10 * S, 1e-16)
    twice = k.snapshot()
    for a, b in zip((once.offset, once.freq, once.p00, once.p01, once.p11),
                    (twice.offset, twice.freq, twice.p00, twice.p01, twice.p11), strict=True):
        assert a == pytest.approx(b, rel=1e-12)
    assert once.offset == pytest.approx(1e-3 + 2e-6 * 10)


def test_predict_never_goes_backwards() -> None:
    k = Kalman2(5 * S, 0.0, 1e-6, 1e-12, 0.0, 1e-12)
    k.predict(3 * S, 1e-16)
    assert k.t_ns == 5 * S and k.offset == 0.0


def test_update_weights_measurement_by_variance() -> None:
    trusting = Kalman2(0, 0.0, 0.0, 1.0, 0.0, 1.0)
    trusting.update(1e-3, 1e-18)
    assert trusting.offset == pytest.approx(1e-3, rel=1e-9)
    doubting = Kalman2(0, 0.0, 0.0, 1e-18, 0.0, 1.0)
    doubting.update(1e-3, 1.0)
    assert abs(doubting.offset) < 1e-15
    assert doubting.p00 <= 1e-18


def test_update_returns_innovation_and_its_variance() -> None:
    k = Kalman2(0, 1.0, 0.0, 2.0, 0.0, 1.0)
    nu, s = k.update(4.0, 2.0)
    assert nu == 3.0 and s == 4.0
    assert k.offset == pytest.approx(2.5) and k.p00 == pytest.approx(1.0)


def test_shift_matches_a_frequency_change_at_that_time() -> None:
    k = Kalman2(0, 0.0, 1e-5, 0.0, 0.0, 0.0)
    k.shift(-2e-3, -4e-6, 3 * S)  # at t = 3 s: step back 2 ms, slope down 4 ppm
    later = k.predicted(10 * S, 0.0)
    expected = 1e-5 * 10 - 2e-3 - 4e-6 * (10 - 3)
    assert later.offset == pytest.approx(expected, rel=1e-12)
    assert later.freq == pytest.approx(6e-6)


def test_merge_of_identical_estimates_keeps_value_and_halves_variance() -> None:
    p = Prediction(0, 1e-3, 2e-6, 4e-12, 1e-15, 1e-14)
    m = merge(p, p)
    assert m.offset == pytest.approx(1e-3) and m.freq == pytest.approx(2e-6)
    assert m.p00 == pytest.approx(2e-12) and m.p11 == pytest.approx(0.5e-14)


def test_merge_is_inverse_variance_weighted() -> None:
    a = Prediction(0, 0.0, 0.0, 1.0, 0.0, 1.0)
    b = Prediction(0, 3.0, 0.0, 2.0, 0.0, 1.0)
    m = merge(a, b)
    assert m.offset == pytest.approx(1.0)  # weights 2/3 and 1/3
    assert m.p00 == pytest.approx(2.0 / 3.0)


def test_merge_degenerate_frequency_information() -> None:
    a = Prediction(0, 1.0, 0.0, 1.0, 0.0, 0.0)
    b = Prediction(0, 3.0, 5e-6, 1.0, 0.0, 0.0)
    m = merge(a, b)
    assert m.offset == pytest.approx(2.0) and math.isfinite(m.freq)


def test_chi1_tail() -> None:
    assert chi1_tail(0.0) == 1.0
    assert chi1_tail(3.841) == pytest.approx(0.05, abs=1e-3)
    assert chi1_tail(1e6) == 0.0
