"""Moving a reference-clock measurement from the host's clock onto another local clock
(the simulated clock of `clock = "simulated"`): core/events.on_local_clock and
core/refclock_events.pulse_on_local_clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind, on_local_clock
from ntpd_py.core.pps_abi import PpsFetch
from ntpd_py.core.refclock_events import PulseFetched, pulse_on_local_clock

NS = 1_000_000_000
instants = st.integers(min_value=10 * NS, max_value=4_000_000_000 * NS)
shifts = st.integers(min_value=-10 * NS, max_value=10 * NS)


def _sample(realtime_ns: int, offset_s: float) -> Sample:
    return Sample(source_id="sock:/run/gps.sock", kind=SourceKind.SOCK, offset_s=offset_s,
                  delay_s=0.0, uncertainty_s=1e-6, root_delay_s=0.0, root_dispersion_s=0.0,
                  stratum=0, leap=LeapIndicator.NONE, reference_id=0, mono_ns=5 * NS,
                  realtime_ns=realtime_ns, poll_log2=0)


@given(instants, shifts, st.floats(min_value=-1.0, max_value=1.0))
def test_the_reference_instant_is_kept(real: int, shift: int, offset_s: float) -> None:
    moved = on_local_clock(_sample(real, offset_s), real + shift)
    # reference = local + offset, whichever local clock it is measured against
    assert moved.realtime_ns == real + shift
    reference_before = real * 10**9 + round(offset_s * 1e18)  # in 1e-18 s: no float rounding
    reference_after = moved.realtime_ns * 10**9 + round(moved.offset_s * 1e18)
    assert abs(reference_after - reference_before) <= 10**6  # 1 ps: float rounding only

    assert moved.mono_ns == 5 * NS


def test_a_local_clock_ahead_sees_the_reference_behind() -> None:
    moved = on_local_clock(_sample(1_000 * NS, 0.0), 1_000 * NS + 300_000_000)
    assert moved.offset_s == -0.3


@given(instants, shifts, st.integers(min_value=0, max_value=NS))
def test_each_pulse_stamp_is_mapped_at_its_own_instant(real: int, shift: int,
                                                       age: int) -> None:
    mono = 7 * NS
    # a local clock running 100 ppm fast relative to CLOCK_MONOTONIC, offset by `shift`
    def local_ns(mono_ns: int) -> int:
        return real + shift + (mono_ns - mono) + (mono_ns - mono) // 10_000

    event = PulseFetched(PpsFetch(3, 0, real - age, 0, 0x11), mono, real)
    moved = pulse_on_local_clock(event, local_ns)
    assert moved.mono_ns == mono and moved.realtime_ns == local_ns(mono)
    assert moved.fetch.assert_ns == local_ns(mono - age)
    assert moved.fetch.clear_ns == 0  # no clear edge captured: stays "none"
    assert moved.fetch.assert_sequence == 3
