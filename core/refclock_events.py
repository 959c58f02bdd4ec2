"""What flows in and out of the reference-clock sources (core/sock_source.py, core/pps_source.py).

Both sources publish samples and wake up at deadlines (core/source_actions.py) and
report a status change as :class:`Report`. The PPS source also asks its worker to
wait for a pulse (:class:`FetchPulse`); the worker answers with exactly one event
(:class:`PulseFetched`, :class:`FetchTimedOut` or :class:`PpsDeviceFailed`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .pps_abi import PpsFetch
from .source_actions import Publish, SetTimer

__all__ = [
    "CheckDevice",
    "FetchPulse",
    "FetchTimedOut",
    "PpsAction",
    "PpsDeviceChecked",
    "PpsDeviceFailed",
    "PpsErrorKind",
    "PpsEvent",
    "Publish",
    "PulseFetched",
    "RefclockStatus",
    "Report",
    "SetTimer",
    "SockAction",
]


@dataclass(frozen=True, slots=True)
class RefclockStatus:
    """One sock or PPS source as ``ntpctl`` shows it (plain values: serialised as they are)."""

    source_id: str
    kind: str  # "sock" or "pps"
    path: str
    state: str  # the source's state enum value
    message: str
    samples: int
    drops: dict[str, int] = field(default_factory=dict)  # reason -> count
    last_offset_s: float | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The source's state or message changed: tell the supervisor / clock-control."""

    status: RefclockStatus


@dataclass(frozen=True, slots=True)
class CheckDevice:
    """PPS_GETCAP on the device; answered by PpsDeviceChecked or PpsDeviceFailed."""


@dataclass(frozen=True, slots=True)
class FetchPulse:
    """PPS_FETCH with this timeout; answered by exactly one PPS event."""

    timeout_ns: int


class PpsErrorKind(enum.StrEnum):
    """Why the PPS device failed, as the source needs to know it."""

    NOT_PPS = "not-pps"  # ENOTTY: no PPS device (permanent)
    CANNOT_WAIT = "cannot-wait"  # no PPS_CANWAIT: PPS_FETCH ignores timeouts (permanent)
    NO_EDGE = "no-edge"  # the device cannot capture the configured edge (permanent)
    VANISHED = "vanished"  # ENODEV/ENXIO: the device went away
    IO = "io"  # anything else
    NONSENSE = "nonsense"  # the kernel's answer cannot be decoded


@dataclass(frozen=True, slots=True)
class PpsDeviceChecked:
    """PPS_GETCAP answered: the capability bits."""

    caps: int


@dataclass(frozen=True, slots=True)
class PulseFetched:
    """PPS_FETCH returned; the clocks were read right after it returned."""

    fetch: PpsFetch
    mono_ns: int
    realtime_ns: int


@dataclass(frozen=True, slots=True)
class FetchTimedOut:
    """PPS_FETCH waited the whole timeout without a new edge (ETIMEDOUT)."""


@dataclass(frozen=True, slots=True)
class PpsDeviceFailed:
    kind: PpsErrorKind
    message: str


SockAction = Publish | SetTimer | Report
PpsAction = Publish | SetTimer | Report | CheckDevice | FetchPulse
PpsEvent = PpsDeviceChecked | PulseFetched | FetchTimedOut | PpsDeviceFailed


def pulse_on_local_clock(event: PulseFetched, local_ns: Callable[[int], int]) -> PulseFetched:
    """The fetched pulse with its CLOCK_REALTIME stamps moved onto another local clock
    (``local_ns`` maps a CLOCK_MONOTONIC instant to it): the simulated clock of
    ``clock = "simulated"``. Each stamp is mapped at its own instant, so the pairing of
    a pulse with whole seconds happens in the frame the rest of the daemon uses."""
    def moved(stamp_ns: int) -> int:
        if stamp_ns == 0:
            return 0  # no edge of this kind yet
        return local_ns(event.mono_ns - (event.realtime_ns - stamp_ns))

    fetch = replace(event.fetch, assert_ns=moved(event.fetch.assert_ns),
                    clear_ns=moved(event.fetch.clear_ns))
    return PulseFetched(fetch, event.mono_ns, local_ns(event.mono_ns))
