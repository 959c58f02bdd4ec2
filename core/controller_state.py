"""Bookkeeping for :mod:`.controller`: one source's status, and checking saved state.

Kept apart so the controller module reads as the algorithm's flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .combine import SourceEstimate
from .config import AlgorithmConfig
from .events import LeapIndicator, Sample, SourceKind
from .filter import SourceFilter
from .kalman import Prediction
from .snapshots import SelectionState, SourceSnapshot

__all__ = [
    "MAX_RESTORE_AGE_S",
    "SourceState",
    "restore_frequency",
    "restore_sources",
    "restore_steering",
]

MAX_RESTORE_AGE_S = 3600.0  # older per-source filters are not worth restoring
_MAX_FREQ = 500e-6
_NS = 1_000_000_000


@dataclass(slots=True)
class SourceState:
    """What the controller knows about one source besides its filter."""

    source_id: str
    kind: SourceKind
    filter: SourceFilter
    poll_log2: int
    reach: int = 0
    reachable: bool = True
    blocked: str = ""  # why the last sample could not be used (unsynchronized, stratum)
    last: Sample | None = None
    state: SelectionState = SelectionState.UNUSABLE
    reason: str = "no samples yet"

    def record(self, sample: Sample) -> None:
        self.reach = ((self.reach << 1) | 1) & 0xFF
        self.reachable = True
        self.blocked = ""
        self.last = sample

    def block(self, reason: str) -> None:
        self.blocked = reason
        self.set_state(SelectionState.UNUSABLE, reason)

    def mark_unreachable(self) -> None:
        self.reach = (self.reach << 1) & 0xFF
        self.reachable = False
        self.set_state(SelectionState.UNUSABLE, "unreachable")

    def set_state(self, state: SelectionState, reason: str) -> None:
        self.state, self.reason = state, reason

    def unusable_reason(self) -> str:
        if not self.reachable:
            return "unreachable"
        if self.blocked:
            return self.blocked
        if self.last is None:
            # A filter restored by a restarted clock-control has no sample yet to
            # say the source's stratum, root delay and leap: wait for one.
            return "no sample since clock-control started"
        if not self.filter.ready:
            pending = sum(1 for e in self.filter.pending if e[0] == "s")
            return f"collecting start-up samples ({pending} of {self.filter.startup_samples})"
        return ""

    def starting_up(self, now_ns: int) -> bool:
        """Collecting start-up samples, and the last one is recent (two poll intervals)."""
        last = self.filter.last_sample_mono_ns
        if self.filter.ready or not self.reachable or self.blocked or last is None:
            return False
        return now_ns - last <= 2 * 2.0**self.poll_log2 * _NS + _NS

    def estimate_for_combination(self, est: Prediction) -> SourceEstimate:
        last = self.last
        assert last is not None
        return SourceEstimate(
            source_id=self.source_id,
            estimate=est,
            root_delay_s=last.root_delay_s + self.filter.mean_delay(),
            root_dispersion_s=last.root_dispersion_s,
            stratum=last.stratum,
            reference_id=last.reference_id,
            leap=last.leap,
            two_way_delay_s=self.filter.mean_delay() if self.kind is SourceKind.NTP else 0.0,
        )

    def snapshot(self, now_ns: int) -> SourceSnapshot:
        est = self.filter.estimate(now_ns)
        last = self.last
        return SourceSnapshot(
            source_id=self.source_id,
            kind=self.kind,
            state=self.state,
            offset_s=est.offset if est else (last.offset_s if last else 0.0),
            uncertainty_s=est.offset_sigma if est else math.inf,
            delay_s=self.filter.mean_delay(),
            last_offset_s=self.filter.last_offset,
            frequency=est.freq if est else 0.0,
            poll_log2=self.poll_log2,
            reach=self.reach,
            samples=self.filter.samples,
            last_sample_mono_ns=self.filter.last_sample_mono_ns,
            stratum=last.stratum if last else 16,
            reference_id=last.reference_id if last else 0,
            root_delay_s=last.root_delay_s if last else 0.0,
            root_dispersion_s=last.root_dispersion_s if last else 0.0,
            leap=last.leap if last else LeapIndicator.UNSYNCHRONIZED,
            reason=self.reason,
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def restore_frequency(saved: dict[str, Any] | None) -> tuple[float, float] | None:
    """(frequency, uncertainty) from saved state or a drift file, if plausible."""
    if not isinstance(saved, dict):
        return None
    freq = _number(saved.get("frequency"))
    unc = _number(saved.get("frequency_uncertainty"))
    if freq is None or unc is None or abs(freq) > _MAX_FREQ or not 0.0 < unc <= _MAX_FREQ:
        return None
    return freq, unc


def restore_sources(
    saved: dict[str, Any] | None, now_mono_ns: int, now_real_ns: int, algo: AlgorithmConfig
) -> tuple[dict[str, dict[str, Any]], float]:
    """Per-source filter states worth restoring, and the frequency change they must absorb.

    Only from the same boot (monotonic time did not go back, realtime minus
    monotonic is unchanged within ``meddling-threshold``) and not too old.
    """
    if restore_frequency(saved) is None or not isinstance(saved, dict):
        return {}, 0.0
    mono, real = saved.get("mono_ns"), saved.get("real_ns")
    sources, in_force = saved.get("sources"), _number(saved.get("frequency_in_force"))
    if not (isinstance(mono, int) and isinstance(real, int) and isinstance(sources, dict)):
        return {}, 0.0
    if in_force is None or saved.get("version") != 1:
        return {}, 0.0
    same_boot = abs((now_real_ns - now_mono_ns) - (real - mono)) <= algo.meddling_threshold * _NS
    fresh = 0 <= now_mono_ns - mono <= MAX_RESTORE_AGE_S * _NS
    if not (same_boot and fresh):
        return {}, 0.0
    filters = {str(k): v for k, v in sources.items() if isinstance(v, dict)}
    return filters, float(saved["frequency"]) - in_force


def restore_steering(steerer: Any, saved: dict[str, Any] | None, now_mono_ns: int) -> None:
    """Step count, accumulated steps and the start-up flag of a clock-control of this boot.

    Only state saved on this boot (its monotonic stamp not in the future) is
    trusted; a drift file carries none of this.
    """
    if not isinstance(saved, dict):
        return
    saved_mono = saved.get("mono_ns")
    if not isinstance(saved_mono, int) or saved_mono > now_mono_ns:
        return
    steps = saved.get("steps")
    accumulated = _number(saved.get("accumulated_steps_s"))
    if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0:
        steerer.steps = steps
    if accumulated is not None and accumulated >= 0.0:
        steerer.accumulated_s = accumulated
    if saved.get("in_startup") is False:
        steerer.in_startup = False
