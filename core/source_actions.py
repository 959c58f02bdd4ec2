"""Actions every source state machine (NTP client, PHC source) hands to its worker.

The NTP client (core/ntp_client.py) and the PHC source (core/ptp_source.py) both ask
their worker to wake them at an instant and to publish a checked sample. One definition
here keeps the two workers' dispatch on the same names and fields; the source-specific
actions stay in core/ntp_client_types.py and core/ptp_events.py, which re-export these.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import Sample

__all__ = ["Publish", "SetTimer"]


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call the source's ``handle_timer`` at this CLOCK_MONOTONIC instant.

    A later ``SetTimer`` replaces any earlier one: a source has one timer.
    """

    deadline_mono_ns: int


@dataclass(frozen=True, slots=True)
class Publish:
    """A checked measurement for the clock algorithm."""

    sample: Sample
