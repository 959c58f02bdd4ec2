"""What observers see: snapshots merged with worker status, ages from the time passed in."""

from __future__ import annotations

import math

from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.snapshots import SelectionState, SourceSnapshot, SystemSnapshot
from ntpd_py.core.units import NS_PER_S
from ntpd_py.ipc.messages import SourceEntry, SourceStatus
from ntpd_py.workers.bus_guard import BusGuard
from ntpd_py.workers.status_view import build_clock_state, summary_line

from tests.doubles import FakeClock


def _system(*, synced: bool = True, last_update: int | None = 0) -> SystemSnapshot:
    return SystemSnapshot(
        synchronized=synced, offset_s=2.5e-6, offset_uncertainty_s=4e-7, frequency=3e-6,
        frequency_uncertainty=1e-8, stratum=2, reference_id=0x7F000001, root_delay_s=1e-3,
        root_dispersion_s=2e-3, leap=LeapIndicator.NONE, steps=1,
        accumulated_steps_s=0.25, last_update_mono_ns=last_update, selected_sources=("ntp:a",),
    )


def _source(source_id: str, state: SelectionState, *, samples: int = 8,
            last_sample: int | None = 0, offset: float = 1e-4) -> SourceSnapshot:
    return SourceSnapshot(
        source_id=source_id, kind=SourceKind.NTP, state=state, offset_s=offset,
        uncertainty_s=1e-5, delay_s=2e-3, last_offset_s=offset, frequency=0.0, poll_log2=6,
        reach=0o377, samples=samples, last_sample_mono_ns=last_sample, stratum=1,
        reference_id=0x47505300, root_delay_s=0.0, root_dispersion_s=1e-4,
        leap=LeapIndicator.NONE, reason="" if samples else "too few samples",
    )


def _entry(source_id: str) -> SourceEntry:
    return SourceEntry(source_id=source_id, kind="ntp", name=source_id.removeprefix("ntp:"),
                       poll_log2=4, poll_min=4, poll_max=10)


def test_ages_come_from_the_time_passed_in() -> None:
    clock = FakeClock()
    system = _system(last_update=clock.mono_ns)
    source = _source("ntp:a", SelectionState.SELECTED, last_sample=clock.mono_ns)
    clock.advance(3 * NS_PER_S)
    state = build_clock_state(system, [source], [_entry("ntp:a")], {}, BusGuard(), "observe",
                              clock.mono_ns, clock.real_ns)
    assert (state.mono_ns, state.realtime_ns) == (clock.mono_ns, clock.real_ns)
    assert state.system.last_update_age_s == 3.0
    assert state.sources[0].last_sample_age_s == 3.0
    assert math.isclose(state.system.frequency_ppm, 3.0)


def test_never_updated_system_shows_no_offset() -> None:
    clock = FakeClock()
    state = build_clock_state(_system(synced=False, last_update=None), [], [], {}, BusGuard(),
                              "system", clock.mono_ns, clock.real_ns)
    assert state.system.offset_s is None and state.system.offset_uncertainty_s is None
    assert state.system.last_update_age_s is None


def test_configured_source_without_snapshot_or_status_is_starting() -> None:
    clock = FakeClock()
    state = build_clock_state(_system(), [], [_entry("ntp:b")], {}, BusGuard(), "system",
                              clock.mono_ns, clock.real_ns)
    (view,) = state.sources
    assert (view.state, view.worker_state, view.poll_log2, view.stratum) == ("?", "starting", 4, 16)
    assert view.offset_s is None and view.samples == 0


def test_worker_status_and_bus_drops_are_merged() -> None:
    clock = FakeClock()
    guard = BusGuard()
    guard.configure("ntp:a", poll_log2=4)
    for _ in range(50):  # a burst beyond the cap: some are dropped and counted
        guard.admit("ntp:a", clock.mono_ns)
    status = SourceStatus(source_id="ntp:a", kind="ntp", name="a", resolved="127.0.0.1",
                          state="unreachable", detail="no reply to 8 polls", poll_log2=4,
                          reach=0, counters={"sent": 9})
    state = build_clock_state(_system(), [_source("ntp:a", SelectionState.UNUSABLE, samples=0)],
                              [_entry("ntp:a")], {"ntp:a": status}, guard, "system",
                              clock.mono_ns, clock.real_ns)
    (view,) = state.sources
    assert view.worker_state == "unreachable" and view.detail == "no reply to 8 polls"
    assert view.reach == 0  # an NTP worker's own reach register wins over the snapshot's
    assert view.resolved == "127.0.0.1" and view.counters == {"sent": 9}
    assert view.ipc_dropped == guard.stats["ntp:a"].dropped_total > 0
    assert view.offset_s is None  # no samples: no estimate shown


def test_summary_line_synchronized_and_not() -> None:
    clock = FakeClock()
    sources = [_source("ntp:a", SelectionState.SELECTED), _source("ntp:b", SelectionState.FALSETICKER)]
    entries = [_entry("ntp:a"), _entry("ntp:b")]
    synced = build_clock_state(_system(last_update=clock.mono_ns), sources, entries, {},
                               BusGuard(), "observe", clock.mono_ns, clock.real_ns)
    assert summary_line(synced) == (
        "synchronized to a, offset +2.5us ±400ns, stratum 2; 1/2 sources usable (observe clock)"
    )
    unsynced = build_clock_state(_system(synced=False), sources, entries, {}, BusGuard(),
                                 "observe", clock.mono_ns, clock.real_ns)
    assert summary_line(unsynced) == "not synchronized; 1/2 sources usable"
