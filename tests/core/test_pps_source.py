"""core/pps_source.py: pairing pulses with whole seconds, and the PPS source state machine."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from ntpd_py.core.config import PpsSourceConfig
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.pps_abi import PPS_CANWAIT, PPS_CAPTUREASSERT, PPS_CAPTUREBOTH, PpsFetch
from ntpd_py.core.pps_source import (
    AMBIGUITY_SIGMAS,
    PPS_TRANSITIONS,
    PpsSource,
    PpsSourceEvent,
    PpsState,
    WholeSeconds,
    pair_pulse,
    whole_seconds_from,
)
from ntpd_py.core.refclock_events import (
    CheckDevice,
    FetchPulse,
    FetchTimedOut,
    PpsDeviceChecked,
    PpsDeviceFailed,
    PpsErrorKind,
    Publish,
    PulseFetched,
    Report,
    SetTimer,
)
from ntpd_py.core.snapshots import SelectionState, SourceSnapshot

from tests.fsm_walk import walk_table

NS = 1_000_000_000
REAL0 = 1_795_000_000 * NS
MONO0 = 7_000 * NS


def est(offset_s: float, unc_s: float = 1e-3, source_id: str = "gps") -> WholeSeconds:
    return WholeSeconds(offset_s, unc_s, source_id)


# -- pairing -------------------------------------------------------------------------------------


def test_no_estimate_means_waiting_for_whole_seconds() -> None:
    pairing = pair_pulse(REAL0 + 300, NS, None)
    assert pairing.offset_s is None and "waiting for a source with whole seconds" in pairing.why


def test_pulse_late_on_the_local_clock_means_the_local_clock_is_ahead() -> None:
    # the local clock reads 0.2 ms past the second at the true second: offset -0.2 ms
    pairing = pair_pulse(REAL0 + 200_000, NS, est(-0.0003))
    assert pairing.offset_s == pytest.approx(-0.0002, abs=1e-12)


def test_whole_seconds_come_from_the_estimate() -> None:
    # the local clock is 3 s and 0.1 ms behind: the pulse lands 0.9999 s into a local second
    pulse = REAL0 - 100_000
    assert pair_pulse(pulse, NS, est(3.0001, 0.01)).offset_s == pytest.approx(3.0001, abs=1e-9)
    assert pair_pulse(pulse, NS, est(-0.9, 0.01)).offset_s == pytest.approx(-0.9999, abs=1e-9)


def test_an_ambiguous_estimate_is_refused() -> None:
    pulse = REAL0 + 500_000_000  # half way: either neighbour second
    assert pair_pulse(pulse, NS, est(0.0, 1e-3)).offset_s is None
    # certain enough, but the pulse is far from where the estimate puts the second
    assert pair_pulse(REAL0 + 400_000_000, NS, est(0.0, 0.05)).offset_s is None
    assert pair_pulse(REAL0 + 400_000_000, NS, est(0.0, 0.03)).offset_s == pytest.approx(-0.4)


@given(st.integers(-10**6, 10**6), st.integers(0, NS - 1), st.integers(-200_000_000, 200_000_000),
       st.sampled_from([NS, NS // 10, 2 * NS]), st.floats(0.0, 0.01))
def test_pairing_finds_the_true_offset_when_the_estimate_is_good(
        whole: int, frac_ns: int, est_error_ns: int, period_ns: int, unc_s: float) -> None:
    """The true offset is whole*period - frac; the estimate is off by est_error."""
    true_offset_ns = whole * period_ns - frac_ns % period_ns
    pulse_ns = REAL0 - true_offset_ns  # local reading at a reference period boundary
    assert (REAL0 % period_ns) == 0
    estimate = est((true_offset_ns + est_error_ns) / NS, unc_s)
    pairing = pair_pulse(pulse_ns, period_ns, estimate)
    margin = abs(est_error_ns) / NS + AMBIGUITY_SIGMAS * unc_s
    if margin < period_ns / 2 / NS:
        assert pairing.offset_s is not None
        assert round(pairing.offset_s * NS) == true_offset_ns
    else:
        # refused, or (the error crossing half a period) never the wrong offset silently
        # accepted with a confident estimate
        assert pairing.offset_s is None or round(pairing.offset_s * NS) != true_offset_ns


@given(st.integers(0, 2**62), st.floats(-1e4, 1e4), st.floats(0.0, 1.0))
def test_a_paired_offset_is_a_pulse_position_near_the_estimate(pulse_ns: int, offset_s: float,
                                                                unc_s: float) -> None:
    pairing = pair_pulse(pulse_ns, NS, est(offset_s, unc_s))
    if pairing.offset_s is not None:
        # Integer arithmetic: a float sum with pulse_ns near 2**62 loses the nanoseconds.
        assert (round(pairing.offset_s * NS) + pulse_ns) % NS in (0, 1, NS - 1)
        assert abs(pairing.offset_s - offset_s) + AMBIGUITY_SIGMAS * unc_s < 0.5 + 1e-9


def _snap(source_id: str, kind: SourceKind, state: SelectionState, unc: float,
          offset: float = 0.01) -> SourceSnapshot:
    return SourceSnapshot(source_id, kind, state, offset, unc, 0.0, offset, 0.0, 0, 255, 10,
                          None, 1, 0, 0.0, 0.0, LeapIndicator.NONE)


def test_whole_seconds_from_the_best_selected_non_pps_source() -> None:
    snaps = [_snap("pps0", SourceKind.PPS, SelectionState.SELECTED, 1e-7),
             _snap("ntp", SourceKind.NTP, SelectionState.COMBINED, 1e-3),
             _snap("gps", SourceKind.SOCK, SelectionState.SELECTED, 1e-4, 0.02),
             _snap("bad", SourceKind.NTP, SelectionState.FALSETICKER, 1e-9)]
    assert whole_seconds_from(snaps) == WholeSeconds(0.02, 1e-4, "gps")
    assert whole_seconds_from(snaps[:1] + snaps[3:]) is None


# -- the state machine ---------------------------------------------------------------------------


def test_transition_table_walk() -> None:
    illegal = walk_table(PPS_TRANSITIONS, PpsState, PpsSourceEvent)
    assert (PpsState.FAILED, PpsSourceEvent.PAIRED) in illegal
    assert (PpsState.CHECKING, PpsSourceEvent.PAIRED) in illegal


def pps(edge: str = "assert", period: float = 1.0) -> PpsSource:
    cfg = PpsSourceConfig.model_validate({"mode": "pps", "path": "/dev/pps0", "precision": 1e-6,
                                          "edge": edge, "period": period})
    return PpsSource(cfg, "pps:/dev/pps0")


def fetched(seq: int, pulse_ns: int, after_ns: int = 20_000, clear_seq: int = 0,
            clear_ns: int = 0) -> PulseFetched:
    return PulseFetched(PpsFetch(seq, clear_seq, pulse_ns, clear_ns, 0x1101),
                        MONO0 + (pulse_ns - REAL0) + after_ns, pulse_ns + after_ns)


def running(src: PpsSource) -> None:
    assert src.start(MONO0) == [CheckDevice()]
    actions = src.handle_event(PpsDeviceChecked(PPS_CAPTUREBOTH | PPS_CANWAIT), MONO0)
    assert actions[-1] == FetchPulse(src.timeout_ns) and src.state is PpsState.NO_SIGNAL


def test_waits_for_whole_seconds_then_publishes() -> None:
    src = pps()
    running(src)
    actions = src.handle_event(fetched(1, REAL0 + 1_000), MONO0)
    assert src.state is PpsState.WAITING_FOR_SECONDS
    assert "waiting for a source with whole seconds" in src.status().message
    assert not any(isinstance(a, Publish) for a in actions)
    assert actions[-1] == FetchPulse(src.timeout_ns)
    src.update_whole_seconds(est(0.0004, 1e-3, "sock:/run/chrony.ttyS0.sock"))
    actions = src.handle_event(fetched(2, REAL0 + NS - 2_000), MONO0)
    (pub,) = [a for a in actions if isinstance(a, Publish)]
    s = pub.sample
    assert s.kind is SourceKind.PPS and s.offset_s == pytest.approx(2e-6)
    assert s.uncertainty_s == 1e-6 and s.realtime_ns == REAL0 + NS - 2_000
    assert s.mono_ns == MONO0 + NS - 2_000
    assert src.state is PpsState.RUNNING and "chrony.ttyS0" in src.status().message
    assert src.status().drops == {"unpaired": 1}


def test_clear_edge_and_missed_pulses() -> None:
    src = pps(edge="clear")
    running(src)
    src.update_whole_seconds(est(0.0))
    # woken by an assert edge only: the clear sequence did not move after the first
    src.handle_event(fetched(1, REAL0, clear_seq=4, clear_ns=REAL0 + 100), MONO0)
    actions = src.handle_event(fetched(2, REAL0 + NS // 2, clear_seq=4,
                                       clear_ns=REAL0 + 100), MONO0)
    assert actions == [FetchPulse(src.timeout_ns)]
    actions = src.handle_event(fetched(3, REAL0 + 3 * NS + 50, clear_seq=7,
                                       clear_ns=REAL0 + 3 * NS + 100),
                               MONO0)
    assert [a for a in actions if isinstance(a, Publish)]
    assert src.status().drops == {"missed": 2}


def test_no_canwait_or_edge_fails_for_good() -> None:
    src = pps()
    src.start(MONO0)
    src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT), MONO0)
    assert src.state is PpsState.FAILED and "PPS_CANWAIT" in src.status().message
    with pytest.raises(ValueError):
        src.handle_event(FetchTimedOut(), MONO0)
    src = pps(edge="clear")
    src.start(MONO0)
    src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT | PPS_CANWAIT), MONO0)
    assert src.state is PpsState.FAILED and "clear edge" in src.status().message


def test_timeouts_stale_pulses_and_device_errors() -> None:
    src = pps()
    running(src)
    src.update_whole_seconds(est(0.0))
    actions = src.handle_event(FetchTimedOut(), MONO0)
    assert src.state is PpsState.NO_SIGNAL and actions[-1] == FetchPulse(src.timeout_ns)
    src.handle_event(fetched(1, REAL0, after_ns=30 * NS), MONO0)
    assert src.status().drops == {"stale": 1}
    actions = src.handle_event(PpsDeviceFailed(PpsErrorKind.IO, "EIO"), MONO0)
    assert src.state is PpsState.UNREACHABLE and actions[-1] == SetTimer(MONO0 + NS)
    assert any(isinstance(a, Report) for a in actions)
    assert src.handle_timer(MONO0 + NS) == [CheckDevice()]
    src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT | PPS_CANWAIT), MONO0 + NS)
    assert src.state is PpsState.NO_SIGNAL


def test_one_device_action_at_a_time() -> None:
    src = pps()
    src.start(MONO0)
    assert src.handle_timer(MONO0) == []  # nothing scheduled while the device is asked
    with pytest.raises(ValueError):
        src.start(MONO0)  # a second request before the first is answered
    src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT | PPS_CANWAIT), MONO0)
    src.handle_event(PpsDeviceFailed(PpsErrorKind.IO, "EIO"), MONO0)
    with pytest.raises(ValueError):  # waiting for its retry timer: nothing was asked for
        src.handle_event(FetchTimedOut(), MONO0)


@given(st.lists(st.integers(-200_000, 200_000), min_size=1, max_size=30),
       st.floats(-0.3, 0.3))
def test_published_offsets_follow_the_pulses(jitter_ns: list[int], local_error_s: float) -> None:
    """Local clock off by local_error; pulses at true seconds with jitter: the offsets are
    -local_error - jitter, whole seconds from a coarse estimate."""
    assume(abs(local_error_s) < 0.3)
    src = pps()
    running(src)
    src.update_whole_seconds(est(-local_error_s + 0.01, 0.02))
    got, want = [], []
    for i, jit in enumerate(jitter_ns, start=1):
        pulse_local = REAL0 + i * NS + round(local_error_s * NS) + jit
        actions = src.handle_event(fetched(i, pulse_local), MONO0)
        got += [a.sample.offset_s for a in actions if isinstance(a, Publish)]
        want.append((-round(local_error_s * NS) - jit) / NS)
    assert got == pytest.approx(want, abs=2e-9)


def test_an_answer_to_another_request_is_refused_before_anything_changes() -> None:
    src = pps()
    src.start(MONO0)  # CheckDevice outstanding
    before = src.status()
    with pytest.raises(ValueError, match="does not answer CheckDevice"):
        src.handle_event(fetched(1, REAL0), MONO0)
    assert src.status() == before and src.state is PpsState.CHECKING
    src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT | PPS_CANWAIT), MONO0)
    with pytest.raises(ValueError, match="does not answer FetchPulse"):
        src.handle_event(PpsDeviceChecked(PPS_CAPTUREASSERT | PPS_CANWAIT), MONO0)


_EVENTS = st.one_of(
    st.builds(lambda seq, frac, late: fetched(seq, REAL0 + seq * NS + frac, after_ns=late),
              st.integers(0, 40), st.integers(-NS // 2, NS // 2), st.integers(-NS, 20 * NS)),
    st.just(FetchTimedOut()),
    st.builds(PpsDeviceFailed, st.sampled_from(list(PpsErrorKind)), st.just("x")),
    st.builds(PpsDeviceChecked, st.integers(0, 0x3FFF)),
)


@given(st.lists(_EVENTS, max_size=40),
       st.one_of(st.none(), st.builds(est, st.floats(-2.0, 2.0), st.floats(0.0, 0.2))))
def test_any_event_sequence_keeps_the_machine_consistent(events: list[object],
                                                          whole: WholeSeconds | None) -> None:
    """Events that answer the outstanding request are taken, others refused unchanged;
    a sample is published only with whole seconds, and only in RUNNING."""
    src = pps()
    src.update_whole_seconds(whole)
    src.start(MONO0)
    now = MONO0
    for event in events:
        now += NS
        src.handle_timer(now)
        before = src.status()
        try:
            actions = src.handle_event(event, now)  # type: ignore[arg-type]
        except ValueError:
            assert src.status() == before
            continue
        published = [a for a in actions if isinstance(a, Publish)]
        if published:
            assert whole is not None and src.state is PpsState.RUNNING
        requests = [a for a in actions if isinstance(a, CheckDevice | FetchPulse)]
        assert len(requests) <= 1
        if src.state is PpsState.FAILED:
            assert requests == []
