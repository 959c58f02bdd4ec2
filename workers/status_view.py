"""Assemble what observers see: the algorithm's snapshots merged with worker status."""

from __future__ import annotations

import math

from ntpd_py.core.snapshots import SourceSnapshot, SystemSnapshot
from ntpd_py.ipc.messages import (
    ClockBackendName,
    ClockStateMsg,
    SourceEntry,
    SourceStatus,
    SourceView,
    SystemView,
)

from .bus_guard import BusGuard

__all__ = ["build_clock_state", "summary_line"]

PRECISION_LOG2 = -23  # about 120 ns: what a Python daemon can timestamp to


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _system_view(snap: SystemSnapshot, backend: ClockBackendName,
                 now_mono_ns: int) -> SystemView:
    age = None
    if snap.last_update_mono_ns is not None:
        age = max(0.0, (now_mono_ns - snap.last_update_mono_ns) / 1e9)
    return SystemView(
        synchronized=snap.synchronized,
        clock_backend=backend,
        offset_s=_finite(snap.offset_s) if snap.last_update_mono_ns is not None else None,
        offset_uncertainty_s=_finite(snap.offset_uncertainty_s)
        if snap.last_update_mono_ns is not None
        else None,
        frequency_ppm=snap.frequency * 1e6,
        frequency_uncertainty_ppm=snap.frequency_uncertainty * 1e6,
        stratum=snap.stratum,
        reference_id=snap.reference_id,
        root_delay_s=snap.root_delay_s,
        root_dispersion_s=snap.root_dispersion_s,
        leap=int(snap.leap),  # type: ignore[arg-type]
        precision_log2=PRECISION_LOG2,
        steps=snap.steps,
        accumulated_steps_s=snap.accumulated_steps_s,
        last_update_age_s=age,
        reference_time_ns=None,
    )


def _source_view(
    entry: SourceEntry,
    snap: SourceSnapshot | None,
    status: SourceStatus | None,
    dropped: int,
    now_mono_ns: int,
) -> SourceView:
    age = None
    if snap is not None and snap.last_sample_mono_ns is not None:
        age = max(0.0, (now_mono_ns - snap.last_sample_mono_ns) / 1e9)
    has_data = snap is not None and snap.samples > 0
    return SourceView(
        source_id=entry.source_id,
        kind=entry.kind,
        name=entry.name,
        resolved=status.resolved if status else None,
        state=snap.state.value if snap else "?",
        worker_state=status.state if status else "starting",
        detail=(status.detail if status and status.detail else (snap.reason if snap else "")),
        offset_s=_finite(snap.offset_s) if has_data and snap else None,
        uncertainty_s=_finite(snap.uncertainty_s) if has_data and snap else None,
        delay_s=_finite(snap.delay_s) if has_data and snap else None,
        last_offset_s=_finite(snap.last_offset_s) if has_data and snap else None,
        poll_log2=snap.poll_log2 if snap else entry.poll_log2,
        reach=status.reach if status and entry.kind == "ntp" else (snap.reach if snap else 0),
        samples=snap.samples if snap else 0,
        last_sample_age_s=age,
        stratum=snap.stratum if snap else 16,
        reference_id=snap.reference_id if snap else 0,
        root_delay_s=_finite(snap.root_delay_s) if has_data and snap else None,
        root_dispersion_s=_finite(snap.root_dispersion_s) if has_data and snap else None,
        method=status.method if status else None,
        last_window_s=status.last_window_s if status else None,
        counters=dict(status.counters) if status else {},
        ipc_dropped=dropped,
        nts=status.nts if status else False,
        authenticated=status.authenticated if status else 0,
        cookies=status.cookies if status else None,
    )


def build_clock_state(
    system: SystemSnapshot,
    sources: list[SourceSnapshot],
    entries: list[SourceEntry],
    statuses: dict[str, SourceStatus],
    guard: BusGuard,
    backend: ClockBackendName,
    now_mono_ns: int,
    now_real_ns: int,
) -> ClockStateMsg:
    by_id = {snap.source_id: snap for snap in sources}
    views = [
        _source_view(
            entry,
            by_id.get(entry.source_id),
            statuses.get(entry.source_id),
            guard.stats[entry.source_id].dropped_total if entry.source_id in guard.stats else 0,
            now_mono_ns,
        )
        for entry in entries
    ]
    return ClockStateMsg(
        mono_ns=now_mono_ns,
        realtime_ns=now_real_ns,
        system=_system_view(system, backend, now_mono_ns),
        sources=views,
    )


def _short(seconds: float) -> str:
    magnitude = abs(seconds)
    if magnitude < 1e-6:
        return f"{seconds * 1e9:+.0f}ns"
    if magnitude < 1e-3:
        return f"{seconds * 1e6:+.1f}us"
    if magnitude < 1:
        return f"{seconds * 1e3:+.3f}ms"
    return f"{seconds:+.3f}s"


def summary_line(state: ClockStateMsg) -> str:
    """One line for systemd's STATUS= (and `systemctl status`): sync state, offset, sources."""
    system = state.system
    usable = sum(1 for s in state.sources if s.state in "*+-")
    sources = f"{usable}/{len(state.sources)} sources usable"
    if not system.synchronized:
        return f"not synchronized; {sources}"
    selected = next((s.name for s in state.sources if s.state == "*"), "?")
    offset = ""
    if system.offset_s is not None:
        offset = f", offset {_short(system.offset_s)}"
        if system.offset_uncertainty_s is not None:
            offset += f" ±{_short(system.offset_uncertainty_s).lstrip('+')}"
    return (
        f"synchronized to {selected}{offset}, stratum {system.stratum}; {sources}"
        f" ({system.clock_backend} clock)"
    )
