"""Combination: inverse-variance merge and the system's stratum, refid, root values, leap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.combine import SourceEstimate, combine
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.kalman import Prediction


def est(name: str, offset: float, var: float, *, freq: float = 0.0, disp: float = 0.0,
        stratum: int = 1, refid: int = 0, leap: LeapIndicator = LeapIndicator.NONE,
        root_delay: float = 0.0) -> SourceEstimate:
    return SourceEstimate(name, Prediction(0, offset, freq, var, 0.0, 1e-14), root_delay, disp,
                          stratum, refid, leap)


def test_inverse_variance_weighting() -> None:
    result = combine([est("a", 0.0, 1e-12), est("b", 3e-6, 2e-12)], ignore_server_dispersion=True)
    assert result.estimate.offset == pytest.approx(1e-6)
    assert result.estimate.p00 == pytest.approx(2e-12 / 3)
    assert result.order == ("a", "b")


def test_system_values_come_from_the_most_precise_source() -> None:
    result = combine(
        [est("noisy", 0.0, 1e-8, stratum=3, refid=7, root_delay=1e-2),
         est("good", 0.0, 1e-14, stratum=1, refid=9, root_delay=1e-5)],
        ignore_server_dispersion=True)
    assert (result.stratum, result.reference_id, result.root_delay_s) == (2, 9, 1e-5)
    assert result.root_dispersion_s == pytest.approx(result.estimate.offset_sigma)


def test_server_dispersion_lowers_a_source_weight() -> None:
    sources = [est("a", 0.0, 1e-12, disp=1e-5), est("b", 1e-6, 1e-12)]
    weighted = combine(sources, ignore_server_dispersion=False)
    ignored = combine(sources, ignore_server_dispersion=True)
    assert weighted.estimate.offset > ignored.estimate.offset
    assert weighted.order[0] == "b"


def test_leap_is_the_majority_of_the_combined_sources() -> None:
    ins = LeapIndicator.INSERT
    two = combine([est("a", 0, 1e-12, leap=ins), est("b", 0, 1e-12, leap=ins),
                   est("c", 0, 1e-12)], ignore_server_dispersion=True)
    one = combine([est("a", 0, 1e-12, leap=ins), est("b", 0, 1e-12), est("c", 0, 1e-12)],
                  ignore_server_dispersion=True)
    assert two.leap is ins and one.leap is LeapIndicator.NONE


def test_stratum_is_capped() -> None:
    assert combine([est("a", 0, 1e-12, stratum=16)], ignore_server_dispersion=True).stratum == 16


def test_needs_a_source() -> None:
    with pytest.raises(ValueError):
        combine([], ignore_server_dispersion=False)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=8), st.floats(min_value=-1e3, max_value=1e3),
       st.floats(min_value=-1e-3, max_value=1e-3), st.floats(min_value=1e-20, max_value=1e2),
       st.floats(min_value=0.0, max_value=1e-2), st.booleans())
def test_combination_of_identical_sources_returns_their_value(
    count: int, offset: float, freq: float, var: float, disp: float, ignore: bool,
) -> None:
    sources = [est(f"s{i}", offset, var, freq=freq, disp=disp) for i in range(count)]
    result = combine(sources, ignore_server_dispersion=ignore)
    assert result.estimate.offset == pytest.approx(offset, rel=1e-9, abs=1e-15)
    assert result.estimate.freq == pytest.approx(freq, rel=1e-9, abs=1e-18)
    assert result.estimate.p00 <= var + disp**2 + 1e-30


def test_absurd_dispersion_and_delay_do_not_overflow() -> None:
    # Regression (issue #17, 3b): root_dispersion_s = 1e308 passed the old schema and
    # `1e308**2` raised OverflowError here, ending clock-control. Now capped at MAXDISP.
    good = est("a", 0.001, 1e-12)
    bad = SourceEstimate("b", Prediction(0, 5.0, 0.0, 1e-12, 0.0, 1e-18), 0.0, 1e308, 1, 2,
                         LeapIndicator.NONE, two_way_delay_s=1e308)
    result = combine([good, bad], ignore_server_dispersion=False)
    assert result.order[0] == "a"
    assert abs(result.estimate.offset - 0.001) < 1e-3
    assert result.root_dispersion_s < 1.0
