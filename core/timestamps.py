"""NTP time formats and integer-nanosecond conversions (RFC 5905 §6).

Two wire formats:

* the 64-bit *timestamp* format: 32 bits of seconds since the era epoch and
  32 bits of fraction (unit 2^-32 s, about 233 ps), held here as a Python int
  in ``0 <= ts < 2**64``;
* the 32-bit *short* format (16.16 fixed point seconds) used for root delay
  and root dispersion.

Eras. The 32 seconds bits wrap every 2^32 s (about 136 years): era 0 began
1900-01-01, era 1 begins 2036-02-07T06:28:16Z. A bare 64-bit timestamp does
not say which era it is in, so every conversion to an absolute time is done
relative to a *pivot*:

* :func:`ntp64_to_unix_ns` with ``pivot_unix_ns`` picks the era that puts the
  result within ±2^31 s (±68 years) of the pivot. The client passes its own
  clock reading, so replies decode correctly across the 2036 roll-over.
* Without a pivot the RFC 4330 rule is used: seconds with the top bit set
  are era 0 (1968-01-20 … 2036-02-07), the others era 1 (2036 … 2104).

Differences between two timestamps (what NTP really needs: offset and delay)
are taken modulo 2^64 and read as signed, so they are correct across an era
boundary without knowing the era (:func:`ntp64_diff`).

Absolute instants are integers everywhere; floats appear only for
differences (seconds).
"""

from __future__ import annotations

import math

from .units import NS_PER_S, NTP64_ONE_SECOND, NTP_UNIX_OFFSET_S

__all__ = [
    "NTP64_ONE_SECOND",
    "NTP_UNIX_OFFSET_S",
    "SHORT_MAX",
    "ntp64_diff",
    "ntp64_diff_s",
    "ntp64_to_unix_ns",
    "ntp64_to_unix_ns_near",
    "precision_log2",
    "s_to_short",
    "short_to_s",
    "signed64",
    "unix_ns_to_ntp64",
]

SHORT_MAX = 0xFFFF_FFFF

_OFFSET_NS = NTP_UNIX_OFFSET_S * NS_PER_S
_MASK64 = (1 << 64) - 1
_HALF64 = 1 << 63
_ERA_NS = (1 << 32) * NS_PER_S  # length of one era in ns


def signed64(value: int) -> int:
    """Read a 64-bit two's complement value (given modulo 2^64) as a signed int."""
    value &= _MASK64
    return value - (1 << 64) if value & _HALF64 else value


def unix_ns_to_ntp64(unix_ns: int) -> int:
    """An instant (ns since 1970, integer) in the 64-bit timestamp format, rounded.

    The seconds field wraps into the next era, as on the wire.
    """
    return ((((unix_ns + _OFFSET_NS) << 32) + NS_PER_S // 2) // NS_PER_S) & _MASK64


def _era_extended_to_unix_ns(extended: int) -> int:
    # extended: NTP fixed point counted from era 0's epoch, not wrapped.
    return ((extended * NS_PER_S + (1 << 31)) >> 32) - _OFFSET_NS


def ntp64_to_unix_ns_near(ts: int, pivot_unix_ns: int) -> int:
    """Decode ``ts`` in the era that puts it within ±68 years of ``pivot_unix_ns``."""
    pivot = (((pivot_unix_ns + _OFFSET_NS) << 32) + NS_PER_S // 2) // NS_PER_S
    extended = pivot + signed64(ts - pivot)
    return _era_extended_to_unix_ns(extended)


def ntp64_to_unix_ns(ts: int, pivot_unix_ns: int | None = None) -> int:
    """Decode a 64-bit timestamp to ns since 1970.

    With a pivot, see :func:`ntp64_to_unix_ns_near`. Without one, the RFC 4330
    rule: the seconds' top bit set means era 0, clear means era 1.
    """
    if pivot_unix_ns is not None:
        return ntp64_to_unix_ns_near(ts, pivot_unix_ns)
    ts &= _MASK64
    era = 0 if ts & _HALF64 else 1
    return _era_extended_to_unix_ns((era << 64) + ts)


def ntp64_diff(a: int, b: int) -> int:
    """``a - b`` in units of 2^-32 s, correct across an era boundary (|a - b| < 68 years)."""
    return signed64(a - b)


def ntp64_diff_s(a: int, b: int) -> float:
    """``a - b`` in seconds (a difference, so a float is fine)."""
    return signed64(a - b) / NTP64_ONE_SECOND


def short_to_s(value: int) -> float:
    """The 16.16 short format to seconds."""
    return (value & SHORT_MAX) / 65536.0


def s_to_short(seconds: float) -> int:
    """Seconds to the 16.16 short format, rounded up (these are error bounds).

    Negative or NaN values become 0; values beyond the format saturate.
    """
    if not seconds > 0.0:
        return 0
    if seconds >= SHORT_MAX / 65536.0:
        return SHORT_MAX
    return min(SHORT_MAX, math.ceil(seconds * 65536.0))


def precision_log2(seconds: float) -> int:
    """The NTP precision field (signed log2 seconds, rounded up) for a resolution."""
    if not seconds > 0.0 or not math.isfinite(seconds):
        raise ValueError("a precision must be a positive finite number of seconds")
    return max(-128, min(127, math.ceil(math.log2(seconds))))
