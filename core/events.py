"""Inputs to the clock algorithm: one timestamp sample from one source.

A :class:`Sample` is what every source worker (PHC or NTP) sends to
clock-control. It is the same shape for both kinds so that a PHC takes part in
selection like any NTP server does.

Sign convention (the same for every source): ``offset_s`` is *reference minus
local*. A positive offset means the local clock is behind the source and must
be moved forward.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

__all__ = ["LeapIndicator", "Sample", "SourceKind"]


class SourceKind(enum.StrEnum):
    """How a source measures: two-way over a network, or one-way from a local device."""

    NTP = "ntp"
    PTP = "ptp"
    SOCK = "sock"  # a feeder's samples (gpsd) over a Unix datagram socket
    PPS = "pps"  # a kernel PPS device, its whole seconds from the other sources


class LeapIndicator(enum.IntEnum):
    """The NTP leap indicator values (RFC 5905 figure 9)."""

    NONE = 0
    INSERT = 1  # last minute of the day has 61 seconds
    DELETE = 2  # last minute of the day has 59 seconds
    UNSYNCHRONIZED = 3


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of a source against the local system clock.

    Absolute instants are integer nanoseconds (``mono_ns`` on CLOCK_MONOTONIC,
    ``realtime_ns`` on the local CLOCK_REALTIME, both at the instant the
    offset refers to); differences are float seconds.
    """

    source_id: str
    kind: SourceKind
    offset_s: float  # reference - local
    delay_s: float  # NTP: round-trip delay; PHC: reading window (post - pre)
    # 1-sigma noise of this measurement when the source knows it (PHC: the
    # configured precision combined with the reading window); 0.0 = unknown,
    # the filter estimates it (NTP: from the delay spread).
    uncertainty_s: float
    root_delay_s: float
    root_dispersion_s: float
    stratum: int
    leap: LeapIndicator
    reference_id: int  # 32-bit NTP reference id of the source
    mono_ns: int
    realtime_ns: int
    poll_log2: int  # the interval at which this source is being sampled

    def __post_init__(self) -> None:
        _require(bool(self.source_id), "source_id must not be empty")
        for name in ("offset_s", "delay_s", "uncertainty_s", "root_delay_s", "root_dispersion_s"):
            _require(math.isfinite(getattr(self, name)), f"{name} must be finite")
        _require(self.delay_s >= 0.0, "delay_s must not be negative")
        _require(self.uncertainty_s >= 0.0, "uncertainty_s must not be negative")
        _require(self.root_delay_s >= 0.0, "root_delay_s must not be negative")
        _require(self.root_dispersion_s >= 0.0, "root_dispersion_s must not be negative")
        _require(0 <= self.stratum <= 16, "stratum must be 0..16")
        _require(0 <= self.reference_id < 2**32, "reference_id must fit 32 bits")
        _require(-32 <= self.poll_log2 <= 32, "poll_log2 out of range")


def on_local_clock(sample: Sample, local_realtime_ns: int) -> Sample:
    """The same measurement against another local clock, one that read
    ``local_realtime_ns`` at the sample's instant.

    A feeder (gpsd) or the kernel (PPS) stamps with the host's CLOCK_REALTIME; under
    ``clock = "simulated"`` the daemon's local clock is the simulated one, so the
    offset (reference - local) moves by what the two clocks differ by then.
    """
    shift_s = (sample.realtime_ns - local_realtime_ns) / 1e9
    return replace(sample, offset_s=sample.offset_s + shift_s, realtime_ns=local_realtime_ns)
