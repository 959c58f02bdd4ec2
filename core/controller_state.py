"""Bookkeeping for :mod:`.controller`: one source's status, and checking saved state.

A saved state is validated field by field before any of it is used
(:func:`validate_saved_state`); what bounds steps (:class:`StepBounds`) only grows.

Kept apart so the controller module reads as the algorithm's flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .combine import SourceEstimate
from .config import AlgorithmConfig, SynchronizationConfig
from .errors import CoreError
from .events import LeapIndicator, Sample, SourceKind
from .filter import (
    DELAY_WINDOW,
    MAX_DELAY_S,
    MAX_FREQ,
    MAX_OFFSET_S,
    WANDER_LIMITS,
    SourceFilter,
)
from .kalman import Prediction
from .saved_state import EXPORT_VERSION, DriftPrior, SavedFilter, SavedState
from .snapshots import SelectionState, SourceSnapshot
from .units import NS_PER_S

__all__ = [
    "EXPORT_VERSION",
    "MAX_RESTORE_AGE_S",
    "DriftPrior",
    "SavedFilter",
    "SavedState",
    "SourceState",
    "StateError",
    "StepBounds",
    "finite_number",
    "restore_frequency",
    "restore_sources",
    "restore_steering",
    "saved_bounds",
    "validate_saved_state",
]

MAX_RESTORE_AGE_S = 3600.0  # older per-source filters are not worth restoring
_MAX_FREQ = 500e-6


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
        return now_ns - last <= 2 * 2.0**self.poll_log2 * NS_PER_S + NS_PER_S

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


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return value if math.isfinite(value) else None


# -- validating a saved state ---------------------------------------------------------------
#
# The quick-restart file is read back by a process that steers the clock, so every
# field is checked before any of it is used: a state that fails is discarded whole
# (the caller logs the StateError, which names the field). Limits are generous for
# any state this code exports and tight enough that nothing downstream overflows.

MAX_SAVED_SOURCES = 1024
MAX_SAVED_STEPS = 1_000_000_000
MAX_SAVED_ACCUMULATED_S = 1e12
_INT64 = 2**63 - 1
_SOURCE_KINDS = frozenset(str(k) for k in SourceKind)
_POLL_LIMITS = (-8, 17)
_FILTER_KEYS = frozenset({"kind", "kalman", "wander", "delays", "desired_poll", "samples"})
_STATE_KEYS = frozenset({
    "version", "frequency", "frequency_uncertainty", "frequency_in_force", "mono_ns",
    "real_ns", "sources", "steps", "accumulated_steps_s", "in_startup", "_backend",
})


class StateError(CoreError):
    """A saved state that must not be used; ``field`` names the offending entry."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _int(value: Any, field: str, low: int = 0, high: int = _INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(field, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise StateError(field, f"{value} is not in [{low}, {high}]")
    return value


def _float(value: Any, field: str, low: float, high: float, *, open_low: bool = False) -> float:
    number = finite_number(value)
    if number is None:
        raise StateError(field, f"expected a finite number, got {_show(value)}")
    if number < low or number > high or (open_low and number == low):
        bracket = "(" if open_low else "["
        raise StateError(field, f"{number!r} is not in {bracket}{low:g}, {high:g}]")
    return number


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_filter(saved: Any, field: str, mono_ns: int) -> None:
    """One exported :class:`SourceFilter` (see ``SourceFilter.to_dict``)."""
    if not isinstance(saved, dict):
        raise StateError(field, "expected a table")
    if set(saved) != _FILTER_KEYS:
        raise StateError(field, f"expected the keys {sorted(_FILTER_KEYS)}")
    if not isinstance(saved["kind"], str) or saved["kind"] not in _SOURCE_KINDS:
        raise StateError(f"{field}.kind", f"{_show(saved['kind'])} is not a source kind")
    kalman = saved["kalman"]
    if not isinstance(kalman, list) or len(kalman) != 6:
        raise StateError(f"{field}.kalman", "expected [t_ns, offset, freq, p00, p01, p11]")
    oldest = mono_ns - int(MAX_RESTORE_AGE_S * NS_PER_S)
    _int(kalman[0], f"{field}.kalman[0] (t_ns)", max(oldest, 0), mono_ns)
    _float(kalman[1], f"{field}.kalman[1] (offset)", -MAX_OFFSET_S, MAX_OFFSET_S)
    _float(kalman[2], f"{field}.kalman[2] (freq)", -MAX_FREQ, MAX_FREQ)
    p00 = _float(kalman[3], f"{field}.kalman[3] (p00)", 0.0, MAX_OFFSET_S**2, open_low=True)
    p01 = _float(kalman[4], f"{field}.kalman[4] (p01)", -MAX_OFFSET_S, MAX_OFFSET_S)
    p11 = _float(kalman[5], f"{field}.kalman[5] (p11)", 0.0, MAX_FREQ**2, open_low=True)
    if p01 * p01 > p00 * p11:
        raise StateError(f"{field}.kalman", "covariance is not positive semi-definite")
    _float(saved["wander"], f"{field}.wander", *WANDER_LIMITS)
    delays = saved["delays"]
    if not isinstance(delays, list) or len(delays) > DELAY_WINDOW:
        raise StateError(f"{field}.delays", f"expected a list of at most {DELAY_WINDOW} delays")
    for index, delay in enumerate(delays):
        _float(delay, f"{field}.delays[{index}]", 0.0, MAX_DELAY_S)
    _int(saved["desired_poll"], f"{field}.desired_poll", *_POLL_LIMITS)
    _int(saved["samples"], f"{field}.samples", 0, _INT64)


def validate_saved_state(saved: Any, sync: SynchronizationConfig) -> SavedState:
    """The typed state if every field of an exported state's wire form is usable; else
    StateError.

    Checks types, finiteness, signs and ranges of every field, including each
    source filter, so that restoring it can neither raise nor steer with
    nonsense: the frequency within ``maximum-frequency-steer``, variances
    positive and finite, counters non-negative integers, instants integers.
    """
    if not isinstance(saved, dict):
        raise StateError("state", "expected a table")
    unknown = set(saved) - _STATE_KEYS
    if unknown:
        raise StateError(_show(sorted(map(str, unknown))[0]), "unknown key")
    missing = (_STATE_KEYS - {"_backend"}) - set(saved)
    if missing:
        raise StateError(sorted(missing)[0], "missing")
    if type(saved["version"]) is not int or saved["version"] != EXPORT_VERSION:
        raise StateError("version", f"{_show(saved['version'])} is not {EXPORT_VERSION}")
    limit = sync.algorithm.maximum_frequency_steer
    _float(saved["frequency"], "frequency", -limit, limit)
    _float(saved["frequency_uncertainty"], "frequency_uncertainty", 0.0, _MAX_FREQ,
           open_low=True)
    _float(saved["frequency_in_force"], "frequency_in_force", -limit, limit)
    mono_ns = _int(saved["mono_ns"], "mono_ns")
    _int(saved["real_ns"], "real_ns", -_INT64, _INT64)
    _int(saved["steps"], "steps", 0, MAX_SAVED_STEPS)
    _float(saved["accumulated_steps_s"], "accumulated_steps_s", 0.0, MAX_SAVED_ACCUMULATED_S)
    if not isinstance(saved["in_startup"], bool):
        raise StateError("in_startup", f"expected true or false, got {_show(saved['in_startup'])}")
    sources = saved["sources"]
    if not isinstance(sources, dict) or len(sources) > MAX_SAVED_SOURCES:
        raise StateError("sources", f"expected a table of at most {MAX_SAVED_SOURCES} sources")
    for source_id, filt in sources.items():
        if not isinstance(source_id, str) or not 0 < len(source_id) <= 256:
            raise StateError("sources", f"{_show(source_id)} is not a source id")
        _check_filter(filt, f"sources[{source_id[:64]!r}]", mono_ns)
    backend = saved.get("_backend")
    if backend is not None:
        if not isinstance(backend, dict) or len(backend) > 16:
            raise StateError("_backend", "expected a small table")
        for key, value in backend.items():
            if not isinstance(key, str):
                raise StateError("_backend", f"{_show(key)} is not a key")
            if isinstance(value, float):
                _float(value, f"_backend.{key[:32]}", -1e18, 1e18)
            else:
                _int(value, f"_backend.{key[:32]}", -_INT64, _INT64)
    return SavedState.from_checked(saved)


# -- what bounds steering ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepBounds:
    """What limits steps: counted steps, their total, and whether the start-up phase is over.

    These only ever grow (a step cannot be un-taken, the start-up phase cannot
    restart): two copies combine into the more restrictive of each.
    """

    steps: int = 0
    accumulated_s: float = 0.0
    startup_over: bool = False

    def stricter(self, other: StepBounds | None) -> StepBounds:
        if other is None:
            return self
        return StepBounds(
            max(self.steps, other.steps),
            max(self.accumulated_s, other.accumulated_s),
            self.startup_over or other.startup_over,
        )


def saved_bounds(saved: SavedState | DriftPrior | None) -> StepBounds | None:
    """The bounds a saved state carries (None for a drift file)."""
    if not isinstance(saved, SavedState):
        return None
    return StepBounds(saved.steps, saved.accumulated_steps_s, not saved.in_startup)


def restore_frequency(saved: SavedState | DriftPrior | None) -> tuple[float, float] | None:
    """(frequency, uncertainty) from saved state or a drift file, if plausible."""
    if saved is None:
        return None
    freq, unc = saved.frequency, saved.frequency_uncertainty
    if not (math.isfinite(freq) and math.isfinite(unc)):
        return None
    if abs(freq) > _MAX_FREQ or not 0.0 < unc <= _MAX_FREQ:
        return None
    return freq, unc


def restore_sources(
    saved: SavedState | DriftPrior | None, now_mono_ns: int, now_real_ns: int,
    algo: AlgorithmConfig,
) -> tuple[dict[str, SavedFilter], float]:
    """Per-source filter states worth restoring, and the frequency change they must absorb.

    Only from the same boot (monotonic time did not go back, realtime minus
    monotonic is unchanged within ``meddling-threshold``) and not too old.
    """
    if not isinstance(saved, SavedState) or restore_frequency(saved) is None:
        return {}, 0.0
    if saved.version != EXPORT_VERSION:
        return {}, 0.0
    boot_shift_ns = abs((now_real_ns - now_mono_ns) - (saved.real_ns - saved.mono_ns))
    same_boot = boot_shift_ns <= algo.meddling_threshold * NS_PER_S
    fresh = 0 <= now_mono_ns - saved.mono_ns <= MAX_RESTORE_AGE_S * NS_PER_S
    if not (same_boot and fresh):
        return {}, 0.0
    return dict(saved.sources), saved.frequency - saved.frequency_in_force


def restore_steering(steerer: Any, bounds: StepBounds | None) -> None:
    """Step count, accumulated steps and the start-up flag: the more restrictive of what
    the steerer has and ``bounds`` (from the supervisor's copy and/or a saved state)."""
    if bounds is None:
        return
    steerer.steps = max(steerer.steps, bounds.steps)
    steerer.accumulated_s = max(steerer.accumulated_s, bounds.accumulated_s)
    if bounds.startup_over:
        steerer.in_startup = False
