"""Ready-made clock-control snapshots and views for worker and supervisor unit tests.

Two NTP sources and a synchronized system with plain, recognisable figures, so a test
can check what it formats or merges without building every field itself.
"""

from __future__ import annotations

from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.snapshots import SelectionState, SourceSnapshot, SystemSnapshot
from ntpd_py.ipc.messages import ClockStateMsg, SourceEntry
from ntpd_py.workers.bus_guard import BusGuard
from ntpd_py.workers.status_view import build_clock_state

from tests.doubles import FakeClock

__all__ = ["clock_state", "entry", "source_snapshot", "system_snapshot"]


def system_snapshot(*, synced: bool = True, last_update: int | None = 0) -> SystemSnapshot:
    return SystemSnapshot(
        synchronized=synced, offset_s=2.5e-6, offset_uncertainty_s=4e-7, frequency=3e-6,
        frequency_uncertainty=1e-8, stratum=2, reference_id=0x7F000001, root_delay_s=1e-3,
        root_dispersion_s=2e-3, leap=LeapIndicator.NONE, steps=1,
        accumulated_steps_s=0.25, last_update_mono_ns=last_update, selected_sources=("ntp:a",),
    )


def source_snapshot(source_id: str, state: SelectionState, *, samples: int = 8,
                    last_sample: int | None = 0, offset: float = 1e-4) -> SourceSnapshot:
    return SourceSnapshot(
        source_id=source_id, kind=SourceKind.NTP, state=state, offset_s=offset,
        uncertainty_s=1e-5, delay_s=2e-3, last_offset_s=offset, frequency=0.0, poll_log2=6,
        reach=0o377, samples=samples, last_sample_mono_ns=last_sample, stratum=1,
        reference_id=0x47505300, root_delay_s=0.0, root_dispersion_s=1e-4,
        leap=LeapIndicator.NONE, reason="" if samples else "too few samples",
    )


def entry(source_id: str) -> SourceEntry:
    return SourceEntry(source_id=source_id, kind="ntp", name=source_id.removeprefix("ntp:"),
                       poll_log2=4, poll_min=4, poll_max=10)


def clock_state(clock: FakeClock) -> ClockStateMsg:
    sources = [source_snapshot("ntp:a", SelectionState.SELECTED, last_sample=clock.mono_ns),
               source_snapshot("ntp:b", SelectionState.FALSETICKER, last_sample=clock.mono_ns)]
    return build_clock_state(system_snapshot(last_update=clock.mono_ns), sources,
                             [entry("ntp:a"), entry("ntp:b")], {}, BusGuard(), "observe",
                             clock.mono_ns, clock.real_ns)
