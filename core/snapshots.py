"""Read-only views of the clock algorithm's state, for publishing and `ntpctl`.

Observers (the server worker, `ntpctl status`, metrics) only ever see copies
of these, never live algorithm state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .events import LeapIndicator, SourceKind

__all__ = ["SelectionState", "SourceSnapshot", "SystemSnapshot"]


class SelectionState(enum.StrEnum):
    """chrony's source state characters."""

    SELECTED = "*"  # the best source, used
    COMBINED = "+"  # used in the combination
    NOT_COMBINED = "-"  # agrees, but not used
    FALSETICKER = "x"  # disagrees with the majority
    TOO_VARIABLE = "~"  # too noisy to use
    UNUSABLE = "?"  # unreachable, unsynchronized, too few samples, too uncertain


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    source_id: str
    kind: SourceKind
    state: SelectionState
    offset_s: float  # filtered offset estimate (reference - local)
    uncertainty_s: float  # 1 sigma of that estimate
    delay_s: float
    last_offset_s: float  # the last raw measurement
    frequency: float  # estimated frequency difference source - local, s/s
    poll_log2: int
    reach: int  # 8-bit shift register of answered polls, as chrony/ntpd
    samples: int
    last_sample_mono_ns: int | None
    stratum: int
    reference_id: int
    root_delay_s: float
    root_dispersion_s: float
    leap: LeapIndicator
    reason: str = ""  # why the state is not * or + (human-readable)


@dataclass(frozen=True, slots=True)
class SystemSnapshot:
    synchronized: bool
    offset_s: float  # combined estimate of reference - local, before correction
    offset_uncertainty_s: float
    frequency: float  # total frequency correction in force, s/s
    frequency_uncertainty: float
    stratum: int
    reference_id: int
    root_delay_s: float
    root_dispersion_s: float
    leap: LeapIndicator
    steps: int
    accumulated_steps_s: float
    last_update_mono_ns: int | None
    selected_sources: tuple[str, ...]
