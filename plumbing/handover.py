"""What the supervisor hands each clock-control it forks, inherited in memory across fork.

The supervisor (root, trusted) sets it in the forked child just before the
child's code runs, so nothing a worker can write is involved: the key that
authenticates ``clock-control.state`` (random per supervisor; a state file not
written by a clock-control of this daemon is not resumed) and the latest
step bounds clock-control reported (``SteeringBounds``), which a restart or a
rewritten state file can therefore never reset.
"""

from __future__ import annotations

from dataclasses import dataclass

from ntpd_py.core.controller_state import StepBounds

__all__ = ["Handover", "give", "take"]


@dataclass(frozen=True, slots=True)
class Handover:
    state_key: bytes
    bounds: StepBounds | None
    first_start: bool  # the first clock-control of this supervisor: an old state file is normal


_current: Handover | None = None


def give(handover: Handover | None) -> None:
    global _current
    _current = handover


def take() -> Handover | None:
    """What the supervisor handed over (None in --single-process mode and in tests)."""
    return _current
