"""Simulated PTP hardware clocks and the step from raw readings to a :class:`Sample`.

A PHC keeps true time plus a constant ``bias`` (and an optional step at some
instant). Each read is what the kernel's PTP_SYS_OFFSET_* ioctls return: a
list of (system before, PHC, system after) triplets in integer nanoseconds,
the system stamps on the local CLOCK_REALTIME. The PHC value carries white
noise; the window between the system stamps is ``window`` plus an exponential
jitter (0 models PTP_SYS_OFFSET_PRECISE). A read fails with probability
``read-failure``; with probability ``time-backwards`` the system stamps of
every triplet after the first are 1 ms early (the kernel's system time went
backwards mid-read: the worker rejects such a poll). All randomness is keyed
by (seed, PHC name, read index).

:func:`phc_sample` turns one read into a Sample. The PHC helper's
``core/phc.py`` does the same for the real worker; this one exists so the
simulator does not depend on it, and the lead reconciles the two.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..events import LeapIndicator, Sample, SourceKind
from . import rng
from .clock import SimClock

__all__ = ["BACKWARDS_NS", "PhcModel", "PhcParams", "Reading", "phc_sample", "phc_uncertainty"]

_NS = 1_000_000_000
Reading = tuple[int, int, int]  # (system before, PHC, system after), ns
BACKWARDS_NS = 1_000_000  # how far system time goes back in a `time-backwards` read


@dataclass(frozen=True, slots=True)
class PhcParams:
    bias_s: float = 0.0
    noise_s: float = 0.0  # 1 sigma white noise of each PHC reading
    window_s: float = 0.0
    window_jitter_s: float = 0.0  # mean of the exponential added to the window
    readings: int = 1  # triplets per read (the ioctl's n_samples)
    read_failure: float = 0.0  # probability that a read fails
    time_backwards: float = 0.0  # probability that system time goes backwards within a read
    step_at_s: float | None = None  # the PHC jumps by step_s at this true time
    step_s: float = 0.0


class PhcModel:
    """One PHC; pure functions of true time and the read index."""

    def __init__(self, name: str, params: PhcParams, seed: int) -> None:
        self.name = name
        self.params = params
        self.seed = seed

    def time_error(self, t_ns: int) -> float:
        """PHC minus true time, seconds (without reading noise)."""
        p = self.params
        stepped = p.step_at_s is not None and t_ns >= p.step_at_s * _NS
        return p.bias_s + (p.step_s if stepped else 0.0)

    def read(self, t_ns: int, index: int, clock: SimClock) -> list[Reading] | None:
        """The triplets of read ``index``, starting at true time ``t_ns``; None if it failed."""
        p = self.params
        if p.read_failure and rng.uniform(self.seed, self.name, "fail", index) < p.read_failure:
            return None
        out: list[Reading] = []
        start = t_ns
        backwards = self.backwards(index)
        for i in range(p.readings):
            key = index * 64 + i
            window = p.window_s + rng.exponential(
                self.seed, self.name, "window", key, p.window_jitter_s
            )
            window_ns = max(round(window * _NS), 0)
            mid = start + window_ns // 2
            noise = rng.normal(self.seed, self.name, "noise", key, p.noise_s) if p.noise_s else 0.0
            phc = clock.real_epoch_ns + mid + round((self.time_error(mid) + noise) * _NS)
            back = BACKWARDS_NS if backwards and i > 0 else 0
            out.append((clock.realtime_ns(start) - back, phc,
                        clock.realtime_ns(start + window_ns) - back))
            start += window_ns + 1000  # the next triplet follows a microsecond later
        return out

    def backwards(self, index: int) -> bool:
        """Whether read ``index`` has its system time go backwards after the first reading."""
        p = self.params
        return bool(p.time_backwards) and (
            rng.uniform(self.seed, self.name, "backwards", index) < p.time_backwards)


def phc_uncertainty(precision_s: float, window_s: float) -> float:
    """1 sigma of a PHC offset: the configured precision and half the reading window.

    Where inside the window the device latched its time is unknown (and need
    not be the middle), so half the window is counted as one more
    independent sigma.
    """
    return math.sqrt(precision_s**2 + (window_s / 2.0) ** 2)


def phc_sample(
    source_id: str,
    readings: list[Reading],
    *,
    precision_s: float,
    mono_minus_real_ns: int,
    root_delay_s: float = 0.0,
    stratum: int = 0,
    reference_id: int = 0,
    poll_log2: int = 0,
) -> Sample:
    """The Sample of one read: the triplet with the smallest window, offset at its midpoint."""
    if not readings:
        raise ValueError("a PHC read needs at least one triplet")
    before, phc, after = min(readings, key=lambda r: (r[2] - r[0], r[0]))
    if after < before or any(r[0] < q[2] for q, r in itertools.pairwise(readings)):
        raise ValueError("system time went backwards during a PHC read")
    window_ns = after - before
    mid_ns = before + window_ns // 2
    offset = (phc - before - window_ns / 2) / _NS
    return Sample(
        source_id=source_id,
        kind=SourceKind.PTP,
        offset_s=offset,
        delay_s=window_ns / _NS,
        uncertainty_s=phc_uncertainty(precision_s, window_ns / _NS),
        root_delay_s=root_delay_s,
        root_dispersion_s=0.0,
        stratum=stratum,
        leap=LeapIndicator.NONE,
        reference_id=reference_id,
        mono_ns=mid_ns + mono_minus_real_ns,
        realtime_ns=mid_ns,
        poll_log2=poll_log2,
    )
