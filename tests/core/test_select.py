"""Selection: intersection of intervals, minimum agreeing sources, strict majority."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.select import Candidate, select


def c(name: str, offset: float, radius: float) -> Candidate:
    return Candidate(name, offset, radius)


def test_majority_selected_and_the_odd_one_out_is_a_falseticker() -> None:
    result = select([c("a", 0.0, 1e-4), c("b", 5e-5, 1e-4), c("c", -3e-5, 1e-4),
                     c("d", 0.05, 1e-4)], 3)
    assert set(result.selected) == {"a", "b", "c"}
    assert result.falsetickers == ("d",)
    assert result.consensus and result.agreeing == 3


def test_no_consensus_without_a_strict_majority() -> None:
    result = select([c("a", 0.0, 1e-6), c("b", 1.0, 1e-6)], 1)
    assert not result.consensus and result.falsetickers == ()
    result = select([c("a", 0.0, 1e-6), c("b", 0.0, 1e-6), c("x", 1.0, 1e-6),
                     c("y", 1.0, 1e-6)], 1)
    assert not result.consensus


def test_minimum_agreeing_sources() -> None:
    two = [c("a", 0.0, 1e-4), c("b", 0.0, 1e-4)]
    assert select(two, 3).selected == ()
    assert set(select(two, 2).selected) == {"a", "b"}


def test_single_source_with_minimum_one() -> None:
    assert select([c("/dev/ptp0", 0.01, 1e-7)], 1).selected == ("/dev/ptp0",)


def test_touching_intervals_agree() -> None:
    assert len(select([c("a", 0.0, 1.0), c("b", 2.0, 1.0)], 2).selected) == 2


def test_tie_between_regions_goes_to_the_more_precise_sources() -> None:
    # Wide NTP intervals straddle two tight PHC intervals 300 µs apart.
    cands = [c("ntp1", 150e-6, 200e-6), c("ntp2", 150e-6, 200e-6),
             c("phc-a", 0.0, 2e-7), c("phc-b", 300e-6, 1e-7)]
    result = select(cands, 2)
    assert set(result.selected) == {"ntp1", "ntp2", "phc-b"}
    assert result.falsetickers == ("phc-a",)


def test_sources_still_starting_up_count_toward_the_majority() -> None:
    assert select([c("a", 0.0, 1e-6)], 1, abstaining=1).selected == ()
    assert select([c("a", 0.0, 1e-6), c("b", 0.0, 1e-6)], 1, abstaining=1).consensus


def test_empty() -> None:
    assert not select([], 1).consensus


_cand = st.builds(
    Candidate,
    st.text(min_size=1, max_size=4),
    st.floats(min_value=-1.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=0.5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_cand, max_size=9, unique_by=lambda x: x.source_id),
       st.integers(min_value=1, max_value=5), st.integers(min_value=0, max_value=3))
def test_selection_never_leaves_the_agreeing_set(
    cands: list[Candidate], minimum: int, abstaining: int
) -> None:
    result = select(cands, minimum, abstaining)
    by_id = {x.source_id: x for x in cands}
    assert set(result.selected) <= set(by_id)
    assert not set(result.selected) & set(result.falsetickers)
    if not result.consensus:
        assert result.falsetickers == ()
        return
    assert len(result.selected) >= minimum
    assert 2 * len(result.selected) > len(cands) + abstaining
    assert set(result.selected) | set(result.falsetickers) == set(by_id)
    for sid in result.selected:  # every selected interval covers the agreed region
        x = by_id[sid]
        assert x.offset - x.radius <= result.low <= result.high <= x.offset + x.radius
    # nobody outside the set agrees with all of it: the set is the largest overlap
    assert len(result.selected) == result.agreeing


def test_non_voting_sources_join_the_voters_without_voting() -> None:
    gps = Candidate("gps", 0.0, 1e-4)
    ntp_far = Candidate("ntp", 0.5, 1e-4)
    pps = Candidate("pps", 5e-4, 1e-6)  # outside the GPS's interval: still no vote against
    chosen = select([gps, pps], 1, non_voting=frozenset({"pps"}))
    assert chosen.selected == ("gps", "pps") and chosen.falsetickers == ()
    assert (chosen.low, chosen.high) == (-1e-4, 1e-4)
    # without the exemption two disagreeing sources have no majority at all
    assert not select([gps, pps], 1).consensus
    # the pulse does not break a tie between voters either
    assert not select([gps, ntp_far, pps], 1, non_voting=frozenset({"pps"})).consensus
    # a non-voting source alone never makes a consensus
    assert not select([pps], 1, non_voting=frozenset({"pps"})).consensus
