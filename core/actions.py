"""Outputs of the clock algorithm: what clock-control must do, as values.

The algorithm never touches a clock; it returns these and the clock-control
worker carries them out on its backend (system, observe-only or simulated).

Frequency convention: ``SetFrequency.freq`` is the total frequency correction
applied to the local clock in seconds per second, with the kernel's sign
(positive makes the clock run faster; ``timex.freq`` = freq * 2^16 * 1e6).
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import LeapIndicator
from .exit_codes import EX_SOFTWARE

__all__ = [
    "AdvisePoll",
    "ClockAction",
    "Panic",
    "SeekAnotherServer",
    "SetErrorEstimate",
    "SetFrequency",
    "SetLeap",
    "SetSynchronized",
    "Step",
]


@dataclass(frozen=True, slots=True)
class SetFrequency:
    """Set the total frequency correction (s/s); slews are temporary frequency offsets."""

    freq: float


@dataclass(frozen=True, slots=True)
class Step:
    """Step the clock by ``offset_ns`` (added to the clock: positive moves it forward)."""

    offset_ns: int


@dataclass(frozen=True, slots=True)
class SetLeap:
    """Arm (INSERT/DELETE) or disarm (NONE) a leap second at the end of the UTC day."""

    leap: LeapIndicator


@dataclass(frozen=True, slots=True)
class SetErrorEstimate:
    """Keep the kernel's maxerror/esterror current (seconds)."""

    max_error_s: float
    est_error_s: float


@dataclass(frozen=True, slots=True)
class SetSynchronized:
    """Clear (True) or set (False) the kernel's STA_UNSYNC."""

    synchronized: bool


@dataclass(frozen=True, slots=True)
class AdvisePoll:
    """Tell an NTP source worker which poll interval (log2 s) the algorithm wants."""

    source_id: str
    poll_log2: int


@dataclass(frozen=True, slots=True)
class SeekAnotherServer:
    """Ask an nts-pool member for a new key exchange: its NTP server is counted already."""

    source_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Panic:
    """A required step is beyond a panic threshold: stop steering and exit."""

    message: str
    exit_code: int = EX_SOFTWARE


ClockAction = (
    SetFrequency | Step | SetLeap | SetErrorEstimate | SetSynchronized | AdvisePoll
    | SeekAnotherServer | Panic
)
