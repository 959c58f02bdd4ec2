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

That is the ``white`` model (one noise figure per reading, windows that say
nothing about the error). The reading-level models (``method`` = ``precise``,
``extended``, ``basic``) build every reading the way the kernel does: the
system clock is stamped, the request takes ``up`` to reach the device, which
latches its time, and ``down`` to come back before the next system stamp. The
offset error of a reading's midpoint is then (up - down) / 2, and its window is
up + down: a slow reading is wide and is (on average) a worse one, which is
what a window-aware estimator can use. ``up`` and ``down`` are drawn per
reading from ``delay-dist`` (exponential; gamma of shape ``delay-shape``, a
Poisson-like count of small steps; both with rare ``spike`` delays of
``spike-min``..``spike-max`` added to one direction, as a preemption or an
SMI does) with their own means (asymmetry). EXTENDED readings are separate
(before, PHC, after) triplets ``gap`` apart; basic PTP_SYS_OFFSET stamps are
interleaved sys, phc, sys, ..., sys, so consecutive readings share a system
stamp (and with ``stamp-jitter`` that shared stamp lands early or late, widening
one reading and narrowing its neighbour: :meth:`PhcModel.stamp_jitter_ns`);
PRECISE is one cross-timestamp with its own small ``precise-noise``.
System stamps are truncated to ``granularity`` (so consecutive stamps may be
equal), and ``max-reads-per-s`` caps the readings per poll as a slow bus does.
``common-noise`` is an error shared by every reading of one read (white from
read to read), which the readings' scatter cannot show: in the QEMU guest the
igb PHC's polls scattered by 23 ns while each poll's readings said 4 ns
(benchmarks/phc_sigma_check.py).

:func:`phc_sample` turns one read into a Sample. The PHC helper's
``core/phc.py`` does the same for the real worker; this one exists so the
simulator does not depend on it, and the lead reconciles the two.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..events import LeapIndicator, Sample, SourceKind
from ..units import NS_PER_S
from . import rng
from .clock import SimClock

__all__ = ["BACKWARDS_NS", "PhcModel", "PhcParams", "Reading", "phc_sample", "phc_uncertainty"]

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
    # reading-level models (method != "white"); see the module docstring
    method: str = "white"  # white | precise | extended | basic
    delay_dist: str = "exponential"  # exponential | gamma
    delay_shape: float = 4.0  # gamma shape (k); 1 is the exponential
    delay_up_s: float = 0.0  # mean of the system-stamp-to-latch delay
    delay_down_s: float = 0.0  # mean of the latch-to-system-stamp delay
    spike_probability: float = 0.0  # per reading and direction
    spike_min_s: float = 0.0
    spike_max_s: float = 0.0
    gap_s: float = 0.0  # between two EXTENDED readings
    precise_noise_s: float = 0.0  # 1 sigma of a PRECISE cross-timestamp
    common_noise_s: float = 0.0  # 1 sigma of an error shared by every reading of one read
    granularity_s: float = 0.0  # of the system clock stamps
    max_reads_per_s: float = 0.0  # 0: no limit
    # basic only: the shared system stamp lands up to this far (uniform, either way)
    # from where the transits put it, so a late stamp widens one reading and narrows
    # the next (see stamp_jitter_ns)
    stamp_jitter_s: float = 0.0


class PhcModel:
    """One PHC; pure functions of true time and the read index."""

    def __init__(self, name: str, params: PhcParams, seed: int) -> None:
        self.name = name
        self.params = params
        self.seed = seed

    def time_error(self, t_ns: int) -> float:
        """PHC minus true time, seconds (without reading noise)."""
        p = self.params
        stepped = p.step_at_s is not None and t_ns >= p.step_at_s * NS_PER_S
        return p.bias_s + (p.step_s if stepped else 0.0)

    def readings_per_poll(self, poll_s: float) -> int:
        """Readings in one poll: ``readings``, at most ``max-reads-per-s`` times the interval."""
        p = self.params
        if p.max_reads_per_s <= 0.0:
            return p.readings
        return max(1, min(p.readings, int(p.max_reads_per_s * poll_s)))

    def read(self, t_ns: int, index: int, clock: SimClock,
             poll_s: float = 1.0) -> list[Reading] | None:
        """The triplets of read ``index``, starting at true time ``t_ns``; None if it failed."""
        p = self.params
        if p.read_failure and rng.uniform(self.seed, self.name, "fail", index) < p.read_failure:
            return None
        if p.method != "white":
            return self._read_level(t_ns, index, clock, self.readings_per_poll(poll_s))
        out: list[Reading] = []
        start = t_ns
        backwards = self.backwards(index)
        for i in range(p.readings):
            key = index * 64 + i
            window = p.window_s + rng.exponential(
                self.seed, self.name, "window", key, p.window_jitter_s
            )
            window_ns = max(round(window * NS_PER_S), 0)
            mid = start + window_ns // 2
            noise = rng.normal(self.seed, self.name, "noise", key, p.noise_s) if p.noise_s else 0.0
            noise += self.common_error(index)
            phc = clock.real_epoch_ns + mid + round((self.time_error(mid) + noise) * NS_PER_S)
            back = BACKWARDS_NS if backwards and i > 0 else 0
            out.append((clock.realtime_ns(start) - back, phc,
                        clock.realtime_ns(start + window_ns) - back))
            start += window_ns + 1000  # the next triplet follows a microsecond later
        return out

    def transit_ns(self, key: int, direction: str) -> int:
        """One reading's ``up`` or ``down`` transit delay, ns (for workers/sim_phc.py)."""
        p = self.params
        return self._delay_ns(key, direction, p.delay_up_s if direction == "up" else p.delay_down_s)

    def _delay_ns(self, key: int, direction: str, mean_s: float) -> int:
        """One transit delay, ns: the body from ``delay-dist`` plus a rare spike."""
        p = self.params
        if p.delay_dist == "gamma" and mean_s > 0.0:
            # a sum of k exponentials: a Poisson-like count of small steps (k integer)
            k = max(1, round(p.delay_shape))
            body = sum(rng.exponential(self.seed, self.name, f"{direction}{j}", key, mean_s / k)
                       for j in range(k))
        else:
            body = rng.exponential(self.seed, self.name, direction, key, mean_s)
        if p.spike_probability and rng.uniform(
                self.seed, self.name, f"spike-{direction}", key) < p.spike_probability:
            u = rng.uniform(self.seed, self.name, f"spike-size-{direction}", key)
            body += p.spike_min_s + u * (p.spike_max_s - p.spike_min_s)
        return round(body * NS_PER_S)

    def stamp_jitter_ns(self, key: int) -> int:
        """Where the shared system stamp after reading ``key`` lands, relative to where
        its transits put it, ns (PTP_SYS_OFFSET only; 0 without ``stamp-jitter``).

        The CPU reads its clock (the TSC) for the stamp without waiting for the
        device read before it to retire, nor the next one to wait for it, so the
        stamp lands early or late within the interval between two latches. In
        PTP_SYS_OFFSET that stamp closes one reading and opens the next, so its
        error is shared: it widens one window and narrows its neighbour by the
        same amount, and moves both midpoints the same way. The windows of
        neighbouring readings are then anticorrelated and their offsets
        correlated; a narrow window no longer says that reading was a good one.
        """
        j = self.params.stamp_jitter_s
        if not j:
            return 0
        return round((2.0 * rng.uniform(self.seed, self.name, "stamp", key) - 1.0) * j * NS_PER_S)

    def _stamp(self, clock: SimClock, t_ns: int) -> int:
        """CLOCK_REALTIME at true ``t_ns`` as the kernel returns it (truncated to granularity)."""
        real = clock.realtime_ns(t_ns)
        g = round(self.params.granularity_s * NS_PER_S)
        return real - real % g if g > 1 else real

    def common_error(self, index: int) -> float:
        """The error every reading of read ``index`` shares (``common-noise``), s."""
        p = self.params
        return rng.normal(self.seed, self.name, "common", index, p.common_noise_s) \
            if p.common_noise_s else 0.0

    def _phc_at(self, clock: SimClock, t_ns: int, key: int) -> int:
        p = self.params
        noise = rng.normal(self.seed, self.name, "noise", key, p.noise_s) if p.noise_s else 0.0
        noise += self.common_error(key // 64)
        return clock.real_epoch_ns + t_ns + round((self.time_error(t_ns) + noise) * NS_PER_S)

    def _read_level(self, t_ns: int, index: int, clock: SimClock, n: int) -> list[Reading]:
        p = self.params
        back = BACKWARDS_NS if self.backwards(index) else 0
        if p.method == "precise":
            # one cross-timestamp: device and system time latched together, with a little noise
            noise = rng.normal(self.seed, self.name, "precise", index, p.precise_noise_s)
            sys = clock.realtime_ns(t_ns) + round(noise * NS_PER_S)
            return [(sys, self._phc_at(clock, t_ns, index * 64), sys)]
        out: list[Reading] = []
        t = t_ns
        before = self._stamp(clock, t)
        for i in range(n):
            key = index * 64 + i
            latch = t + self._delay_ns(key, "up", p.delay_up_s)
            t = latch + self._delay_ns(key, "down", p.delay_down_s)
            if p.method == "basic" and i < n - 1 and p.stamp_jitter_s:
                # the shared stamp lands early or late, but never past either latch
                nxt = self._delay_ns(key + 1, "up", p.delay_up_s)
                at = min(max(t + self.stamp_jitter_ns(key), latch), t + nxt)
            else:
                at = t
            after = self._stamp(clock, at) - (back if i > 0 or n == 1 else 0)
            out.append((before, self._phc_at(clock, latch, key), after))
            if p.method == "basic":
                before = after  # PTP_SYS_OFFSET: this closing stamp opens the next reading
            else:
                t += round(p.gap_s * NS_PER_S)
                before = self._stamp(clock, t) - back
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
    offset = (phc - before - window_ns / 2) / NS_PER_S
    return Sample(
        source_id=source_id,
        kind=SourceKind.PTP,
        offset_s=offset,
        delay_s=window_ns / NS_PER_S,
        uncertainty_s=phc_uncertainty(precision_s, window_ns / NS_PER_S),
        root_delay_s=root_delay_s,
        root_dispersion_s=0.0,
        stratum=stratum,
        leap=LeapIndicator.NONE,
        reference_id=reference_id,
        mono_ns=mid_ns + mono_minus_real_ns,
        realtime_ns=mid_ns,
        poll_log2=poll_log2,
    )
