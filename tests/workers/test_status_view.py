"""What observers see: snapshots merged with worker status, ages from the time passed in."""

from __future__ import annotations

import math

from ntpd_py.core.snapshots import SelectionState
from ntpd_py.core.units import NS_PER_S
from ntpd_py.ipc.messages import SourceStatus
from ntpd_py.workers.bus_guard import BusGuard
from ntpd_py.workers.status_view import build_clock_state, summary_line

from tests.doubles import FakeClock
from tests.views import entry as _entry
from tests.views import source_snapshot as _source
from tests.views import system_snapshot as _system


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
