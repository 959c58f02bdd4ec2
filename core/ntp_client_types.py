"""Values the NTP client exchanges with its worker: local times, actions, reply outcomes.

Split from :mod:`ntpd_py.core.ntp_client` (which re-exports all of them) to keep
the state machine's module short.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .source_actions import Publish, SetTimer

__all__ = [
    "ClientAction",
    "Demobilize",
    "DemobilizeReason",
    "LocalTime",
    "Publish",
    "ReplyOutcome",
    "ReportUnreachable",
    "Send",
    "SetTimer",
]


@dataclass(frozen=True, slots=True)
class LocalTime:
    """One local instant on both clocks (integer ns).

    ``realtime_ns`` (CLOCK_REALTIME) is what offsets are measured against;
    ``mono_ns`` (CLOCK_MONOTONIC) places the sample for the filter. For a kernel
    receive timestamp the worker derives ``mono_ns`` by subtracting the
    timestamp's age on CLOCK_REALTIME from a CLOCK_MONOTONIC reading.
    """

    realtime_ns: int
    mono_ns: int


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` to the server from a fresh socket (random source port)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ReportUnreachable:
    """The server stopped answering (emitted once per outage; polling goes on)."""

    unanswered_polls: int


class DemobilizeReason(enum.StrEnum):
    DENY = "DENY"
    RSTR = "RSTR"


@dataclass(frozen=True, slots=True)
class Demobilize:
    """Stop using this server for good (it refused us)."""

    reason: DemobilizeReason


ClientAction = Send | SetTimer | Publish | ReportUnreachable | Demobilize


class ReplyOutcome(enum.StrEnum):
    """Why a reply was used or dropped; also the keys of ``NtpClient.counters``."""

    ACCEPTED = "accepted"
    MALFORMED = "malformed"
    WRONG_MODE = "wrong_mode"
    BAD_VERSION = "bad_version"
    UNEXPECTED = "unexpected"  # no request outstanding, or too late
    BOGUS_ORIGIN = "bogus_origin"  # origin is not our transmit timestamp
    DUPLICATE = "duplicate"
    KOD_RATE = "kod_rate"
    KOD_DENY = "kod_deny"
    KOD_RSTR = "kod_rstr"
    KOD_OTHER = "kod_other"
    ZERO_TIMESTAMP = "zero_timestamp"
    UNSYNCHRONIZED = "unsynchronized"  # leap 3 or stratum 16
    STRATUM = "stratum"  # not below our own (local) stratum
    LOOP = "loop"
    BAD_REFTIME = "bad_reftime"  # reference time after transmit time
    BAD_DELAY = "bad_delay"
    ROOT_DISTANCE = "root_distance"
