"""One estimate per PHC poll, and the Sample clock-control receives.

A poll's readings (core/phc.py) become one offset at one local instant; the
estimator depends on the read path (``default_estimator``), chosen with
benchmarks/phc_read.py on a real kernel PHC. All instants are integer ns.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .config import PtpSourceConfig
from .events import LeapIndicator, Sample, SourceKind
from .phc import NS_PER_S, PhcReadingRejected, Reading, ReadMethod

__all__ = [
    "MAX_WINDOW_NS",
    "Estimator",
    "PhcEstimate",
    "WindowSlope",
    "build_sample",
    "default_estimator",
    "estimate",
    "legacy_estimator",
    "reference_id",
    "sample_uncertainty_s",
]

MAX_WINDOW_NS = NS_PER_S  # a reading window longer than 1 s is nonsense, not a slow device


class Estimator(enum.StrEnum):
    """How a poll's readings become one estimate (benchmarks/phc_read.py compares them)."""

    MIN_WINDOW = "min-window"  # the reading with the smallest window (phc2sys)
    LOW_QUARTILE_MEAN = "low-quartile-mean"  # mean of the lowest-window quarter (≤ 2× min)
    # LOW_QUARTILE_MEAN of offsets corrected for the window they were read in (WindowSlope)
    WINDOW_CORRECTED = "window-corrected"
    # every reading weighted by its window, delayed ones out, slope-corrected, σ measured
    ROBUST = "robust"


def default_estimator(method: ReadMethod) -> Estimator:
    """The estimator each read path uses unless configured otherwise.

    ROBUST for EXTENDED and PRECISE: in the reading-level simulator
    (core/sim/phc.py: exponential, gamma and spiky delays, asymmetric paths) it
    is never much worse than any other and mostly better (benchmarks/
    sim_accuracy.py prints both), and on the igb PHC in the QEMU guest
    (benchmarks/phc_read.py, offset jitter median/p99 in ns, two runs) EXTENDED
    robust 6/91 and 6/88 against window-corrected 6/81 and 6/73, low-quartile
    mean 13/91 and 11/97, phc2sys 15/99 and 15/96.

    LOW_QUARTILE_MEAN for PTP_SYS_OFFSET and clock_gettime: on the same igb PHC
    ROBUST (like WINDOW_CORRECTED) had about twice its p99 (BASIC 10/186 against
    9/86; clock_gettime 64/1424 against 39/451), although the simulator's basic
    model says the opposite (aws-ena-basic: 20 against 50 ns RMS). The triplets of
    PTP_SYS_OFFSET share their system stamps, so a late stamp widens one reading
    and narrows the next: the window is a poorer guide than the model makes it,
    and the real device decides.
    """
    if method in (ReadMethod.BASIC, ReadMethod.CLOCK_GETTIME):
        return Estimator.LOW_QUARTILE_MEAN
    return Estimator.ROBUST


def legacy_estimator(method: ReadMethod) -> Estimator:
    """The per-path choice before ROBUST (kept for comparison in the simulator)."""
    if method in (ReadMethod.BASIC, ReadMethod.CLOCK_GETTIME):
        return Estimator.LOW_QUARTILE_MEAN
    if method is ReadMethod.EXTENDED:
        return Estimator.WINDOW_CORRECTED
    return Estimator.MIN_WINDOW


class WindowSlope:
    """Learns how a PHC's offset readings depend on their window, across polls.

    A driver takes its system stamps at fixed points of its code, but the PHC
    latches somewhere in between, and not at the midpoint: when a read is slow,
    the extra time falls mostly before (or after) the latch, so a reading's
    midpoint offset grows with its window, ``offset ≈ θ + slope · window``
    (the emulated igb PHC: +0.3 ns per ns). Within each poll the readings are
    regressed on their windows (those up to 3× the poll's smallest; offsets and
    windows taken relative to the poll's means, so the PHC's drift between polls
    does not enter), summed over polls with exponential forgetting. A latch
    inside the window means |slope| ≤ 0.5; a fit beyond that says the model does
    not hold and nothing is corrected. Corrections are taken
    relative to ``reference_window_ns`` (a running mean of the polls' smallest
    windows), so the correction removes the scatter, not the midpoint convention.
    """

    FORGET = 0.98  # per poll: about the last 50 polls count
    WARMUP_POLLS = 8  # no correction before this many polls have been seen

    def __init__(self) -> None:
        self._sxy = 0.0
        self._sxx = 0.0
        self._polls = 0
        self._ref: float | None = None
        # out-of-sample check of the slope: each poll's scatter with and without the
        # slope learnt from the polls before it (forgotten like the fit)
        self._ss_plain = 0.0
        self._ss_corrected = 0.0

    @property
    def slope(self) -> float:
        if self._polls < self.WARMUP_POLLS or self._sxx <= 0.0:
            return 0.0
        fitted = self._sxy / self._sxx
        # beyond ±0.5 the readings do not fit the model (e.g. a PHC ticking at a very
        # different rate, like QEMU's e1000e): do not correct at all
        return fitted if abs(fitted) <= 0.5 else 0.0

    @property
    def reference_window_ns(self) -> float:
        return self._ref if self._ref is not None else 0.0

    @property
    def polls(self) -> int:
        return self._polls

    @property
    def helps(self) -> bool:
        """Whether correcting by the slope has reduced the scatter of polls it was not fitted on.

        On some read paths the window is a poor guide (PTP_SYS_OFFSET, whose readings
        share their system stamps; clock_gettime): there a fitted slope is noise, and
        benchmarks/phc_read.py on the igb PHC showed it doubling the jitter's p99.
        """
        return self.slope != 0.0 and self._ss_corrected < self._ss_plain

    def correction_ns(self, window_ns: int) -> int:
        """What to subtract from an offset read with ``window_ns``."""
        return round(self.slope * (window_ns - self.reference_window_ns))

    def update(self, readings: Sequence[Reading]) -> None:
        smallest = min(r.window_ns for r in readings)
        self._ref = smallest if self._ref is None else self._ref + (smallest - self._ref) / 16
        used = [r for r in readings if r.window_ns <= 3 * smallest]
        if len(used) < 3:
            return
        # relative to the first reading, so no float ever holds an absolute instant
        w0, o0 = used[0].window_ns, used[0].offset_ns
        ws = [r.window_ns - w0 for r in used]
        offs = [r.offset_ns - o0 for r in used]
        mean_w, mean_o = sum(ws) / len(ws), sum(offs) / len(offs)
        s = self.slope  # from earlier polls only
        fixed = [o - s * w for w, o in zip(ws, offs, strict=True)]
        mean_f = sum(fixed) / len(fixed)
        self._ss_plain = self.FORGET * self._ss_plain + sum((o - mean_o) ** 2 for o in offs)
        self._ss_corrected = self.FORGET * self._ss_corrected + sum(
            (f - mean_f) ** 2 for f in fixed)
        self._sxy = self.FORGET * self._sxy + sum(
            (w - mean_w) * (o - mean_o) for w, o in zip(ws, offs, strict=True))
        self._sxx = self.FORGET * self._sxx + sum((w - mean_w) ** 2 for w in ws)
        self._polls += 1


@dataclass(frozen=True, slots=True)
class PhcEstimate:
    """One poll's result: offset (reference - local) at local CLOCK_REALTIME ``realtime_ns``."""

    offset_ns: int
    window_ns: int  # of the reading(s) used; 0 for a cross-timestamp
    realtime_ns: int  # the local instant the offset refers to (window midpoint)
    used: int  # readings that went into the estimate
    total: int  # readings in the poll
    # 1 σ of the offset measured from the poll's own scatter (ROBUST only), ns
    sigma_ns: float | None = None


def _validate(readings: Sequence[Reading]) -> None:
    if not readings:
        raise PhcReadingRejected("nonsense", "the device returned no readings")
    previous: Reading | None = None
    for r in readings:
        if r.window_ns < 0:
            raise PhcReadingRejected(
                "stepped", f"negative reading window ({r.window_ns} ns): the system clock "
                "was stepped during the read; poll dropped")
        if r.window_ns > MAX_WINDOW_NS:
            raise PhcReadingRejected(
                "nonsense", f"reading window of {r.window_ns / NS_PER_S:.3f} s is over 1 s")
        if previous is not None:
            if r.sys_before_ns < previous.sys_after_ns:
                raise PhcReadingRejected(
                    "stepped", "system time went backwards between readings: the system "
                    "clock was stepped during the read; poll dropped")
            if r.phc_ns < previous.phc_ns:
                raise PhcReadingRejected("nonsense", "the PHC went backwards within one poll")
        previous = r


def estimate(readings: Sequence[Reading], estimator: Estimator = Estimator.MIN_WINDOW,
             slope: WindowSlope | None = None) -> PhcEstimate:
    """One estimate from one poll; raises PhcReadingRejected for a poll that must be dropped.

    MIN_WINDOW keeps the reading with the smallest window (ties: the earliest).
    LOW_QUARTILE_MEAN averages offsets and midpoints of the ceil(n/4) smallest-window
    readings, leaving out any whose window is over twice the smallest (an interrupted
    read among few good ones); the window reported is the largest one used.
    WINDOW_CORRECTED does the same with each offset first corrected by ``slope``
    (which the caller updates after each poll; without it, it is LOW_QUARTILE_MEAN).
    """
    _validate(readings)
    if estimator is Estimator.ROBUST and len(readings) > 1:
        return _robust(readings, slope)
    if estimator is Estimator.MIN_WINDOW or len(readings) == 1:
        best = min(readings, key=lambda r: r.window_ns)
        return PhcEstimate(best.offset_ns, best.window_ns, best.midpoint_ns, 1, len(readings))
    ordered = sorted(readings, key=lambda r: r.window_ns)
    limit = 2 * ordered[0].window_ns
    low = [r for r in ordered[: math.ceil(len(readings) / 4)] if r.window_ns <= limit]
    k = len(low)
    fix = slope.correction_ns if estimator is Estimator.WINDOW_CORRECTED and slope else None
    offset = _round_div(sum(r.offset_ns - (fix(r.window_ns) if fix else 0) for r in low), k)
    midpoint = _round_div(sum(r.midpoint_ns for r in low), k)
    return PhcEstimate(offset, low[-1].window_ns, midpoint, k, len(readings))


# A reading whose window is over this many times the poll's typical narrow window is a
# delayed read (preemption, an SMI, a contended bus): left out, not merely down-weighted.
# 2 and 4 are alike in the simulator; on the igb PHC (benchmarks/phc_read.py) the heavy
# tail of real windows made 4 worse at p99, as LOW_QUARTILE_MEAN's 2 had found.
OUTLIER_WINDOWS = 2.0


def _robust(readings: Sequence[Reading], slope: WindowSlope | None) -> PhcEstimate:
    """ROBUST: a window-weighted mean of window-corrected offsets.

    Why each part, for readings whose latch instant is unknown inside the window:

    * weight: a reading's midpoint error is at most half its window and, for
      delays of any shape, spreads with it (uniform over the window: σ = w/√12),
      so readings count as 1 / (w² + s²), ``s`` the poll's scale (the mean of its
      narrowest quarter of windows, at least 1 ns): readings about as narrow as
      the best count about equally (averaging their independent errors), wide
      ones fade quadratically. Equal windows (a white-noise PHC, a coarse clock
      that stamps 0-ns windows) give a plain mean.
    * outliers: windows beyond OUTLIER_WINDOWS × that scale are left out.
    * asymmetry: if the delay before the latch differs from the one after, the
      midpoint error grows with the window; ``slope`` (learnt across polls, and
      used only while it reduces the scatter of polls it was not fitted on)
      takes each offset to the device's typical smallest window (as
      WINDOW_CORRECTED does: extrapolating a line to a zero window that no
      real read reaches would trade scatter for a guess).
    """
    ordered = sorted(readings, key=lambda r: r.window_ns)
    quarter = ordered[: max(1, math.ceil(len(ordered) / 4))]
    scale = max(1.0, sum(r.window_ns for r in quarter) / len(quarter))
    used = [r for r in ordered if r.window_ns <= OUTLIER_WINDOWS * scale] or ordered[:1]
    s = slope.slope if slope is not None and slope.helps else 0.0
    ref = slope.reference_window_ns if slope is not None else 0.0
    base_o, base_m = used[0].offset_ns, used[0].midpoint_ns  # differences only in floats
    weights = [1.0 / (float(r.window_ns) ** 2 + scale * scale) for r in used]
    offs = [r.offset_ns - base_o - s * (r.window_ns - ref) for r in used]
    total = sum(weights)
    mean_o = sum(w * o for w, o in zip(weights, offs, strict=True)) / total
    mean_m = sum(w * (r.midpoint_ns - base_m) for w, r in zip(weights, used, strict=True)) / total
    sigma: float | None = None
    if len(used) >= 3:
        # weighted least squares: the readings' variances are c·(w² + s²) with c unknown;
        # their scatter measures c, so the estimate's σ comes from the poll itself
        c = sum(w * (o - mean_o) ** 2 for w, o in zip(weights, offs, strict=True)) / (
            len(used) - 1)
        sigma = math.sqrt(c / total)
    # the widest window used is what the Sample reports as its delay
    return PhcEstimate(base_o + round(mean_o), used[-1].window_ns, base_m + round(mean_m),
                       len(used), len(readings), sigma)


def _round_div(total: int, n: int) -> int:
    """Integer division rounding to nearest (ties away from zero), no floats on instants."""
    q, r = divmod(abs(total), n)
    q += 2 * r >= n
    return q if total >= 0 else -q


def sample_uncertainty_s(precision_s: float, window_ns: int) -> float:
    """1-σ uncertainty of one PHC sample.

    The PHC was read at an unknown instant inside the window, taken as uniform
    over it, so using the midpoint adds an error of σ = window/√12; it is
    independent of the device's own noise (the configured ``precision``, 1 σ),
    so the two add in quadrature: sqrt(precision² + window²/12).
    """
    window_s = window_ns / NS_PER_S
    return math.sqrt(precision_s * precision_s + window_s * window_s / 12.0)


# An estimate's own scatter is itself uncertain (25 readings measure a σ to about ±15 %),
# and readings of one poll can share an error the scatter cannot show (a common latch
# delay): the measured σ is never taken below this fraction of the one-reading figure.
SCATTER_FLOOR = 0.1
MIN_SIGMA_NS = 1.0  # the timestamps' resolution


def _uncertainty_s(est: PhcEstimate, config: PtpSourceConfig) -> float:
    """A Sample's σ: from the poll's scatter when the estimator measured it, else the model."""
    if est.sigma_ns is None:
        return sample_uncertainty_s(config.precision, est.window_ns)
    floor = max(MIN_SIGMA_NS / NS_PER_S, SCATTER_FLOOR * config.precision)
    return max(est.sigma_ns / NS_PER_S, floor)


def reference_id(device_index: int | None) -> int:
    """The 32-bit NTP reference id of /dev/ptpN: ASCII "PHC" + N for N < 10, "PH" + two
    digits for N < 100, "P" + three digits for N < 1000, "PHC?" when N is unknown."""
    if device_index is None or not 0 <= device_index < 1000:
        text = "PHC?"
    elif device_index < 10:
        text = f"PHC{device_index}"
    elif device_index < 100:
        text = f"PH{device_index}"
    else:
        text = f"P{device_index}"
    return int.from_bytes(text.encode("ascii"), "big")


def build_sample(est: PhcEstimate, config: PtpSourceConfig, *, source_id: str,
                 device_index: int | None, mono_ns: int, realtime_ns: int,
                 poll_log2: int | None = None) -> Sample:
    """The Sample clock-control receives for one estimate.

    ``mono_ns``/``realtime_ns`` are a CLOCK_MONOTONIC/CLOCK_REALTIME pair the
    worker read together right after the ioctl; the sample's monotonic instant
    is the estimate's midpoint carried over by their difference.
    """
    behind_ns = realtime_ns - est.realtime_ns
    if not 0 <= behind_ns <= MAX_WINDOW_NS:
        raise PhcReadingRejected(
            "stepped", "the system clock moved between the read and its timestamp; poll dropped")
    return Sample(
        source_id=source_id,
        kind=SourceKind.PTP,
        offset_s=est.offset_ns / NS_PER_S,
        delay_s=est.window_ns / NS_PER_S,
        uncertainty_s=_uncertainty_s(est, config),
        root_delay_s=config.delay,
        root_dispersion_s=0.0,
        stratum=config.stratum,
        leap=LeapIndicator.NONE,
        reference_id=reference_id(device_index),
        mono_ns=mono_ns - behind_ns,
        realtime_ns=est.realtime_ns,
        poll_log2=config.interval if poll_log2 is None else poll_log2,
    )
