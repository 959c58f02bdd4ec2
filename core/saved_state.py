"""The quick-restart snapshot as types: what clock-control saves and resumes from.

:class:`SavedState` is the controller's exported state, :class:`SavedFilter`
one source's filter in it, :class:`DriftPrior` what a drift file gives instead.
Each has one wire form (``to_wire``: plain tables, lists and numbers for JSON)
and ``EXPORT_VERSION`` names it; a file of another version is not resumed from.
Reading the wire form back goes through ``controller_state.validate_saved_state``,
which checks every field before building these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXPORT_VERSION", "DriftPrior", "SavedFilter", "SavedState"]

EXPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedFilter:
    """One source's filter: Kalman state (t_ns, offset, freq, p00, p01, p11) and history."""

    kind: str
    kalman: tuple[int, float, float, float, float, float]
    wander: float
    delays: tuple[float, ...]
    desired_poll: int
    samples: int

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "kalman": list(self.kalman), "wander": self.wander,
                "delays": list(self.delays), "desired_poll": self.desired_poll,
                "samples": self.samples}

    @classmethod
    def from_checked(cls, raw: Mapping[str, Any]) -> SavedFilter:
        """From a wire table whose fields were checked already."""
        k = raw["kalman"]
        return cls(str(raw["kind"]),
                   (int(k[0]), float(k[1]), float(k[2]), float(k[3]), float(k[4]), float(k[5])),
                   float(raw["wander"]), tuple(float(d) for d in raw["delays"]),
                   int(raw["desired_poll"]), int(raw["samples"]))


@dataclass(frozen=True, slots=True)
class DriftPrior:
    """The frequency and its uncertainty from a drift file (no sources, no step bounds)."""

    frequency: float
    frequency_uncertainty: float

    def to_wire(self) -> dict[str, Any]:
        return {"frequency": self.frequency, "frequency_uncertainty": self.frequency_uncertainty}


@dataclass(frozen=True, slots=True)
class SavedState:
    """Everything clock-control needs to resume within the same boot."""

    frequency: float
    frequency_uncertainty: float
    frequency_in_force: float  # base plus the slew in force when saved
    mono_ns: int
    real_ns: int
    sources: Mapping[str, SavedFilter]
    # Kept so that restarting clock-control can neither reset the accumulated-step
    # limit nor re-open the start-up limits.
    steps: int
    accumulated_steps_s: float
    in_startup: bool
    # The clock backend's own state (the simulated clock's), opaque to the algorithm.
    backend: Mapping[str, int | float] | None = None
    version: int = field(default=EXPORT_VERSION)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "version": self.version,
            "frequency": self.frequency,
            "frequency_uncertainty": self.frequency_uncertainty,
            "frequency_in_force": self.frequency_in_force,
            "mono_ns": self.mono_ns,
            "real_ns": self.real_ns,
            "sources": {sid: f.to_wire() for sid, f in self.sources.items()},
            "steps": self.steps,
            "accumulated_steps_s": self.accumulated_steps_s,
            "in_startup": self.in_startup,
        }
        if self.backend is not None:
            wire["_backend"] = dict(self.backend)
        return wire

    @classmethod
    def from_checked(cls, raw: Mapping[str, Any]) -> SavedState:
        """From a wire table that ``validate_saved_state`` checked field by field."""
        backend = raw.get("_backend")
        return cls(float(raw["frequency"]), float(raw["frequency_uncertainty"]),
                   float(raw["frequency_in_force"]), int(raw["mono_ns"]), int(raw["real_ns"]),
                   {str(sid): SavedFilter.from_checked(f) for sid, f in raw["sources"].items()},
                   int(raw["steps"]), float(raw["accumulated_steps_s"]), bool(raw["in_startup"]),
                   None if backend is None else dict(backend), int(raw["version"]))
