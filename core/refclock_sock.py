"""The SOCK reference-clock sample: the datagram gpsd (and other feeders) send to chrony.

A feeder such as gpsd writes one datagram per measurement to a Unix datagram
socket: a ``struct timeval`` (the local CLOCK_REALTIME instant the measurement
refers to), the offset in seconds (reference minus local, a C double), a pulse
flag, the leap indicator, one padding int and the magic number 0x534f434b
("SOCK"). The feeder writes it in its own native layout, so the size depends on
its ``time_t``: 40 bytes with a 64-bit ``time_t`` (every 64-bit Linux, and
32-bit builds with ``_TIME_BITS=64``), 32 bytes with a 32-bit one (old i386 and
armhf builds). Both are accepted; anything else is refused with a typed reason
so the worker can count drops per reason.

Pure functions only: no socket here (workers/refclock_io.py receives).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

from .errors import RemoteSourceError
from .events import LeapIndicator
from .units import NS_PER_S, NS_PER_US

__all__ = [
    "MAX_ABS_OFFSET_S",
    "SOCK_MAGIC",
    "SOCK_SAMPLE_SIZES",
    "SockRejectReason",
    "SockSample",
    "SockSampleRejected",
    "encode_sock_sample",
    "parse_sock_sample",
]

SOCK_MAGIC = 0x534F434B
# Native byte order and sizes, no implicit padding: the fields sit at the offsets the C
# compiler gives them on every Linux ABI (the double is 4- or 8-aligned at an 8-aligned
# offset either way).
_LAYOUT_64 = struct.Struct("=qqdiiiI")  # tv_sec, tv_usec, offset, pulse, leap, pad, magic
_LAYOUT_32 = struct.Struct("=iidiiiI")
_LAYOUTS = {_LAYOUT_64.size: _LAYOUT_64, _LAYOUT_32.size: _LAYOUT_32}
SOCK_SAMPLE_SIZES = tuple(sorted(_LAYOUTS))  # (32, 40)
# An offset beyond this is no measurement: 2^31 s is past any date a 32-bit time_t holds.
# (A GPS that sets a clock with no RTC may legitimately report decades, so the bound is
# loose; the clock algorithm's panic thresholds decide what a large offset may do.)
MAX_ABS_OFFSET_S = float(2**31)


class SockRejectReason(enum.StrEnum):
    """Why a datagram was dropped (the values are the counters' labels)."""

    WRONG_SIZE = "wrong-size"
    WRONG_MAGIC = "wrong-magic"
    OFFSET_NOT_FINITE = "offset-not-finite"
    OFFSET_ABSURD = "offset-absurd"
    BAD_TIMEVAL = "bad-timeval"  # negative seconds or microseconds outside [0, 10^6)
    BAD_LEAP = "bad-leap"  # a leap value outside 0..3


class SockSampleRejected(RemoteSourceError):
    """A datagram that is no valid SOCK sample; ``reason`` says why (for counters)."""

    def __init__(self, reason: SockRejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SockSample:
    """One decoded sample.

    ``time_ns`` is the feeder's local CLOCK_REALTIME instant of the measurement;
    ``offset_s`` is reference minus local, as everywhere in ntpd-py (gpsd sends
    GPS time minus the local time it received the fix at).
    """

    time_ns: int
    offset_s: float
    pulse: bool  # the feeder says: only the position within the second is meaningful
    leap: LeapIndicator
    size: int  # 40 (64-bit time_t) or 32 (32-bit time_t)


def parse_sock_sample(data: bytes) -> SockSample:
    """Decode one datagram; raise :class:`SockSampleRejected` if it is not a valid sample."""
    layout = _LAYOUTS.get(len(data))
    if layout is None:
        raise SockSampleRejected(
            SockRejectReason.WRONG_SIZE,
            f"datagram of {len(data)} bytes; a SOCK sample has "
            f"{' or '.join(map(str, SOCK_SAMPLE_SIZES))}")
    sec, usec, offset, pulse, leap, _pad, magic = layout.unpack(data)
    if magic != SOCK_MAGIC:
        raise SockSampleRejected(SockRejectReason.WRONG_MAGIC,
                                 f"magic 0x{magic:08x}, expected 0x{SOCK_MAGIC:08x}")
    if not math.isfinite(offset):
        raise SockSampleRejected(SockRejectReason.OFFSET_NOT_FINITE, f"offset {offset}")
    if abs(offset) > MAX_ABS_OFFSET_S:
        raise SockSampleRejected(SockRejectReason.OFFSET_ABSURD, f"offset {offset:g} s")
    if sec < 0 or not 0 <= usec < 1_000_000:
        raise SockSampleRejected(SockRejectReason.BAD_TIMEVAL,
                                 f"timeval {sec}.{usec} is not a valid instant")
    if not 0 <= leap <= 3:
        raise SockSampleRejected(SockRejectReason.BAD_LEAP, f"leap {leap}")
    return SockSample(time_ns=sec * NS_PER_S + usec * NS_PER_US, offset_s=offset,
                      pulse=pulse != 0, leap=LeapIndicator(leap), size=len(data))


def encode_sock_sample(time_ns: int, offset_s: float, *, pulse: bool = False,
                       leap: int = 0, time_t_bits: int = 64, magic: int = SOCK_MAGIC) -> bytes:
    """The datagram a feeder sends (tests and the simulator; ``time_ns`` truncated to µs)."""
    layout = _LAYOUT_64 if time_t_bits == 64 else _LAYOUT_32
    sec, rest = divmod(time_ns, NS_PER_S)
    return layout.pack(sec, rest // NS_PER_US, offset_s, int(pulse), leap, 0, magic)
