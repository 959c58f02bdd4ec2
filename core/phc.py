"""PTP hardware clock readings: the kernel's ioctl buffer layouts, as pure functions.

The Linux PTP ioctl ABI (include/uapi/linux/ptp_clock.h, x86_64 layouts in
shared/reference/peers-and-kernel-abi.md §1): building the request buffers and
decoding the result buffers into integer-nanosecond readings.
core/phc_estimate.py turns a poll's readings into one estimate and a Sample;
workers/_phc.py does the ioctls.

A reading is a triplet (sys_before, phc, sys_after) on the local
CLOCK_REALTIME: the PHC was read somewhere inside the window
[sys_before, sys_after]. Its offset is taken at the window's midpoint,
``offset = phc - (sys_before + sys_after) / 2``: reference minus local, the
sign every source uses (positive: the local clock is behind the PHC).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .errors import RemoteSourceError
from .units import NS_PER_S

__all__ = [
    "CAPS_SIZE",
    "EXTENDED_SIZE",
    "NS_PER_S",
    "PRECISE_SIZE",
    "PTP_MAX_SAMPLES",
    "SYS_OFFSET_SIZE",
    "PhcCaps",
    "PhcReadingRejected",
    "PreciseReading",
    "ReadMethod",
    "Reading",
    "decode_caps",
    "decode_extended",
    "decode_precise",
    "decode_sys_offset",
    "encode_extended",
    "encode_sys_offset",
]

PTP_MAX_SAMPLES = 25

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
