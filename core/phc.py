"""PTP hardware clock readings: kernel buffer layouts, one estimate per poll, the Sample.

Pure functions over the Linux PTP ioctl ABI (include/uapi/linux/ptp_clock.h,
x86_64 layouts in shared/reference/peers-and-kernel-abi.md §1): building the
request buffers, decoding the result buffers into integer-nanosecond readings,
turning a poll's readings into one estimate, and that estimate into a
:class:`~ntpd_py.core.events.Sample`. workers/_phc.py does the ioctls.

A reading is a triplet (sys_before, phc, sys_after) on the local
CLOCK_REALTIME: the PHC was read somewhere inside the window
[sys_before, sys_after]. Its offset is taken at the window's midpoint,
``offset = phc - (sys_before + sys_after) / 2``: reference minus local, the
sign every source uses (positive: the local clock is behind the PHC).
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .config import PtpSourceConfig
from .errors import RemoteSourceError
from .events import LeapIndicator, Sample, SourceKind

__all__ = [
    "CAPS_SIZE",
    "EXTENDED_SIZE",
    "MAX_WINDOW_NS",
    "PRECISE_SIZE",
    "PTP_MAX_SAMPLES",
    "SYS_OFFSET_SIZE",
    "Estimator",
    "PhcCaps",
    "PhcEstimate",
    "PhcReadingRejected",
    "PreciseReading",
    "ReadMethod",
    "Reading",
    "build_sample",
    "decode_caps",
    "decode_extended",
    "decode_precise",
    "decode_sys_offset",
    "default_estimator",
    "encode_extended",
    "encode_sys_offset",
    "estimate",
    "reference_id",
    "sample_uncertainty_s",
]

NS_PER_S = 1_000_000_000
PTP_MAX_SAMPLES = 25
MAX_WINDOW_NS = NS_PER_S  # a reading window longer than 1 s is nonsense, not a slow device

_TIME = struct.Struct("<qII")  # struct ptp_clock_time: s64 sec, u32 nsec, u32 reserved
_CAPS = struct.Struct("<20i")  # struct ptp_clock_caps: 9 named ints + reserved, 80 bytes
_SYS_OFFSET_HEAD = struct.Struct("<I3I")  # n_samples, rsv[3]; ts[2*25+1] follows
_EXTENDED_HEAD = struct.Struct("<Ii2I")  # n_samples, clockid, rsv[2]; ts[25][3] follows
CAPS_SIZE = _CAPS.size
SYS_OFFSET_SIZE = _SYS_OFFSET_HEAD.size + (2 * PTP_MAX_SAMPLES + 1) * _TIME.size  # 832
EXTENDED_SIZE = _EXTENDED_HEAD.size + 3 * PTP_MAX_SAMPLES * _TIME.size  # 1216
PRECISE_SIZE = 3 * _TIME.size + 4 * 4  # 64


class ReadMethod(enum.StrEnum):
    """How a PHC is read, best first (the order the source tries them)."""

    PRECISE = "precise"  # PTP_SYS_OFFSET_PRECISE: one hardware cross-timestamp
    EXTENDED = "extended"  # PTP_SYS_OFFSET_EXTENDED: system time taken right around each read
    BASIC = "basic"  # PTP_SYS_OFFSET: system time interleaved with the reads
    CLOCK_GETTIME = "clock_gettime"  # clock_gettime on the fd's dynamic POSIX clock id


class Estimator(enum.StrEnum):
    """How a poll's readings become one estimate (benchmarks/phc_read.py compares them)."""

    MIN_WINDOW = "min-window"  # the reading with the smallest window (phc2sys)
    LOW_QUARTILE_MEAN = "low-quartile-mean"  # mean of the lowest-window quarter (≤ 2× min)


def default_estimator(method: ReadMethod) -> Estimator:
    """The estimator each read path uses unless configured otherwise.

    Chosen with benchmarks/phc_read.py on a real kernel PHC (igb in the QEMU
    guest), same polls for both estimators: for EXTENDED the minimum-window
    reading was as good as any average (offset jitter median/p99 15.5/86 ns vs
    18/88 ns), while for BASIC and clock_gettime, whose windows also hold the
    interleaved system reads, averaging the best quarter cut the jitter by a
    third or more (BASIC 20/170 -> 14/80 ns, clock_gettime 60/1066 -> 42/627 ns).
    """
    if method in (ReadMethod.BASIC, ReadMethod.CLOCK_GETTIME):
        return Estimator.LOW_QUARTILE_MEAN
    return Estimator.MIN_WINDOW


class PhcReadingRejected(RemoteSourceError):
    """A poll's readings cannot be a valid measurement; ``kind`` names why (for counters)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class PhcCaps:
    """struct ptp_clock_caps, the fields a reader cares about."""

    max_adj_ppb: int
    n_alarm: int
    n_ext_ts: int
    n_per_out: int
    pps: bool
    n_pins: int
    cross_timestamping: bool
    adjust_phase: bool
    max_phase_adj_ns: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One (sys_before, phc, sys_after) triplet, integer ns; both sys stamps CLOCK_REALTIME."""

    sys_before_ns: int
    phc_ns: int
    sys_after_ns: int

    @property
    def window_ns(self) -> int:
        return self.sys_after_ns - self.sys_before_ns

    @property
    def midpoint_ns(self) -> int:
        return self.sys_before_ns + self.window_ns // 2

    @property
    def offset_ns(self) -> int:
        """Reference (PHC) minus local (system clock at the window midpoint)."""
        return self.phc_ns - self.midpoint_ns


@dataclass(frozen=True, slots=True)
class PreciseReading:
    """PTP_SYS_OFFSET_PRECISE: device, CLOCK_REALTIME and CLOCK_MONOTONIC_RAW at one instant."""

    device_ns: int
    sys_realtime_ns: int
    sys_monoraw_ns: int

    def as_reading(self) -> Reading:
        """A zero-window triplet: a cross-timestamp has no read window."""
        return Reading(self.sys_realtime_ns, self.device_ns, self.sys_realtime_ns)


@dataclass(frozen=True, slots=True)
class PhcEstimate:
    """One poll's result: offset (reference - local) at local CLOCK_REALTIME ``realtime_ns``."""

    offset_ns: int
    window_ns: int  # of the reading(s) used; 0 for a cross-timestamp
    realtime_ns: int  # the local instant the offset refers to (window midpoint)
    used: int  # readings that went into the estimate
    total: int  # readings in the poll


def _time_ns(buf: bytes | bytearray | memoryview, offset: int) -> int:
    sec, nsec, _reserved = _TIME.unpack_from(buf, offset)
    if nsec >= NS_PER_S:
        raise PhcReadingRejected("nonsense", f"nanoseconds field {nsec} is not below 10^9")
    # The kernel fills these from a normalised timespec64 (0 <= nsec < 10^9).
    return int(sec) * NS_PER_S + int(nsec)


def _check_size(buf: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(buf) != size:
        raise ValueError(f"{what} buffer is {len(buf)} bytes, expected {size}")


def _check_count(n: int) -> None:
    if not 1 <= n <= PTP_MAX_SAMPLES:
        raise ValueError(f"readings per ioctl must be 1..{PTP_MAX_SAMPLES}, got {n}")


def decode_caps(buf: bytes | bytearray | memoryview) -> PhcCaps:
    _check_size(buf, CAPS_SIZE, "ptp_clock_caps")
    f = _CAPS.unpack(buf)
    return PhcCaps(f[0], f[1], f[2], f[3], bool(f[4]), f[5], bool(f[6]), bool(f[7]), f[8])


def encode_sys_offset(n: int) -> bytearray:
    """The PTP_SYS_OFFSET request for ``n`` readings."""
    _check_count(n)
    buf = bytearray(SYS_OFFSET_SIZE)
    _SYS_OFFSET_HEAD.pack_into(buf, 0, n, 0, 0, 0)
    return buf


def encode_extended(n: int, clockid: int = 0) -> bytearray:
    """The PTP_SYS_OFFSET_EXTENDED request; clockid 0 = CLOCK_REALTIME (works on every kernel)."""
    _check_count(n)
    buf = bytearray(EXTENDED_SIZE)
    _EXTENDED_HEAD.pack_into(buf, 0, n, clockid, 0, 0)
    return buf


def decode_sys_offset(buf: bytes | bytearray | memoryview) -> list[Reading]:
    """PTP_SYS_OFFSET result: stamps sys, phc, sys, phc, ..., sys (2n+1); reading i shares its
    closing system stamp with reading i+1's opening one."""
    _check_size(buf, SYS_OFFSET_SIZE, "ptp_sys_offset")
    n = _SYS_OFFSET_HEAD.unpack_from(buf, 0)[0]
    _check_count(n)
    base = _SYS_OFFSET_HEAD.size
    stamps = [_time_ns(buf, base + i * _TIME.size) for i in range(2 * n + 1)]
    return [Reading(stamps[2 * i], stamps[2 * i + 1], stamps[2 * i + 2]) for i in range(n)]


def decode_extended(buf: bytes | bytearray | memoryview) -> list[Reading]:
    """PTP_SYS_OFFSET_EXTENDED result: n triplets [sys_before, phc, sys_after]."""
    _check_size(buf, EXTENDED_SIZE, "ptp_sys_offset_extended")
    n = _EXTENDED_HEAD.unpack_from(buf, 0)[0]
    _check_count(n)
    base = _EXTENDED_HEAD.size
    out = []
    for i in range(n):
        at = base + 3 * i * _TIME.size
        before, phc, after = (_time_ns(buf, at + j * _TIME.size) for j in range(3))
        out.append(Reading(before, phc, after))
    return out


def decode_precise(buf: bytes | bytearray | memoryview) -> PreciseReading:
    """PTP_SYS_OFFSET_PRECISE result: device, sys_realtime, sys_monoraw."""
    _check_size(buf, PRECISE_SIZE, "ptp_sys_offset_precise")
    device, realtime, monoraw = (_time_ns(buf, i * _TIME.size) for i in range(3))
    return PreciseReading(device, realtime, monoraw)


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


def estimate(readings: Sequence[Reading],
             estimator: Estimator = Estimator.MIN_WINDOW) -> PhcEstimate:
    """One estimate from one poll; raises PhcReadingRejected for a poll that must be dropped.

    MIN_WINDOW keeps the reading with the smallest window (ties: the earliest).
    LOW_QUARTILE_MEAN averages offsets and midpoints of the ceil(n/4) smallest-window
    readings, leaving out any whose window is over twice the smallest (an interrupted
    read among few good ones); the window reported is the largest one used.
    """
    _validate(readings)
    if estimator is Estimator.MIN_WINDOW or len(readings) == 1:
        best = min(readings, key=lambda r: r.window_ns)
        return PhcEstimate(best.offset_ns, best.window_ns, best.midpoint_ns, 1, len(readings))
    ordered = sorted(readings, key=lambda r: r.window_ns)
    limit = 2 * ordered[0].window_ns
    low = [r for r in ordered[: math.ceil(len(readings) / 4)] if r.window_ns <= limit]
    k = len(low)
    offset = _round_div(sum(r.offset_ns for r in low), k)
    midpoint = _round_div(sum(r.midpoint_ns for r in low), k)
    return PhcEstimate(offset, low[-1].window_ns, midpoint, k, len(readings))


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
        uncertainty_s=sample_uncertainty_s(config.precision, est.window_ns),
        root_delay_s=config.delay,
        root_dispersion_s=0.0,
        stratum=config.stratum,
        leap=LeapIndicator.NONE,
        reference_id=reference_id(device_index),
        mono_ns=mono_ns - behind_ns,
        realtime_ns=est.realtime_ns,
        poll_log2=config.interval if poll_log2 is None else poll_log2,
    )
