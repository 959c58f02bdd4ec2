"""The Linux PPS ioctl ABI (include/uapi/linux/pps.h) for x86_64, as pure functions.

The ioctl request numbers and the buffers PPS_GETPARAMS/SETPARAMS/GETCAP/FETCH
exchange, built and decoded with :mod:`struct` (tests/core/test_pps_abi.py
compiles a C program against the kernel header and compares every number,
size and field offset). workers/refclock_io.py does the ioctls.

Note the kernel header declares the ioctls with a *pointer* type
(``_IOR('p', 0xa1, struct pps_kparams *)``), so the size field of every request
number is 8 on x86_64, not the struct's size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import RemoteSourceError
from .units import NS_PER_S

__all__ = [
    "FDATA_SIZE",
    "GETCAP_SIZE",
    "KINFO_SIZE",
    "KPARAMS_SIZE",
    "KTIME_SIZE",
    "OFFSETS",
    "PPS_API_VERS_1",
    "PPS_CANWAIT",
    "PPS_CAPTUREASSERT",
    "PPS_CAPTUREBOTH",
    "PPS_CAPTURECLEAR",
    "PPS_FETCH",
    "PPS_GETCAP",
    "PPS_GETPARAMS",
    "PPS_OFFSETASSERT",
    "PPS_OFFSETCLEAR",
    "PPS_SETPARAMS",
    "PPS_TIME_INVALID",
    "PPS_TSFMT_TSPEC",
    "PpsFetch",
    "PpsParams",
    "PpsTimeInvalid",
    "decode_fetch",
    "decode_getcap",
    "decode_params",
    "encode_fetch",
    "encode_params",
]

PPS_API_VERS_1 = 1
PPS_TIME_INVALID = 1 << 0  # pps_ktime.flags: no timeout (wait forever) / no timestamp
PPS_CAPTUREASSERT = 0x01
PPS_CAPTURECLEAR = 0x02
PPS_CAPTUREBOTH = 0x03
PPS_OFFSETASSERT = 0x10
PPS_OFFSETCLEAR = 0x20
PPS_CANWAIT = 0x100  # PPS_FETCH honours a timeout (every Linux PPS device does)
PPS_TSFMT_TSPEC = 0x1000

_IOC_WRITE, _IOC_READ = 1, 2
_POINTER_SIZE = 8  # the header's ioctl "type" is a pointer: sizeof(void *) on x86_64


def _ioc(direction: int, nr: int) -> int:
    """asm-generic _IOC(dir, 'p', nr, size): dir<<30 | size<<16 | type<<8 | nr."""
    return direction << 30 | _POINTER_SIZE << 16 | ord("p") << 8 | nr


PPS_GETPARAMS = _ioc(_IOC_READ, 0xA1)  # 0x800870a1
PPS_SETPARAMS = _ioc(_IOC_WRITE, 0xA2)  # 0x400870a2
PPS_GETCAP = _ioc(_IOC_READ, 0xA3)  # 0x800870a3
PPS_FETCH = _ioc(_IOC_READ | _IOC_WRITE, 0xA4)  # 0xc00870a4

_KTIME = struct.Struct("<qiI")  # __s64 sec, __s32 nsec, __u32 flags
# struct pps_kinfo: u32 assert_sequence, u32 clear_sequence, ktime assert_tu, ktime clear_tu,
# int current_mode, then 4 bytes of tail padding (the struct is 8-aligned by the __s64s).
_KINFO = struct.Struct("<II16s16si4x")
# struct pps_kparams: int api_version, int mode, ktime assert_off_tu, ktime clear_off_tu
_KPARAMS = struct.Struct("<ii16s16s")
_FDATA = struct.Struct(f"<{_KINFO.size}s16s")  # kinfo info, ktime timeout
_INT = struct.Struct("<i")
KTIME_SIZE = _KTIME.size  # 16
KINFO_SIZE = _KINFO.size  # 48
KPARAMS_SIZE = _KPARAMS.size  # 40
FDATA_SIZE = _FDATA.size  # 64
# (field, offset) of each struct, as offsetof() gives them (checked against the header)
OFFSETS: dict[str, dict[str, int]] = {
    "pps_ktime": {"sec": 0, "nsec": 8, "flags": 12},
    "pps_kinfo": {"assert_sequence": 0, "clear_sequence": 4, "assert_tu": 8, "clear_tu": 24,
                  "current_mode": 40},
    "pps_kparams": {"api_version": 0, "mode": 4, "assert_off_tu": 8, "clear_off_tu": 24},
    "pps_fdata": {"info": 0, "timeout": KINFO_SIZE},
}


class PpsTimeInvalid(RemoteSourceError):
    """A timestamp the kernel returned is no valid instant (nsec outside [0, 10^9))."""


@dataclass(frozen=True, slots=True)
class PpsFetch:
    """struct pps_kinfo after PPS_FETCH: the latest captured edges (CLOCK_REALTIME, ns).

    A sequence number counts the edges of its kind captured since the device was
    registered; an unchanged number means no new edge.
    """

    assert_sequence: int
    clear_sequence: int
    assert_ns: int
    clear_ns: int
    current_mode: int


@dataclass(frozen=True, slots=True)
class PpsParams:
    """struct pps_kparams (offset compensations as signed ns)."""

    api_version: int
    mode: int
    assert_offset_ns: int = 0
    clear_offset_ns: int = 0


def _ktime(ns: int, flags: int = 0) -> bytes:
    sec, nsec = divmod(ns, NS_PER_S)
    return _KTIME.pack(sec, nsec, flags)


def _ktime_ns(raw: bytes, what: str) -> int:
    sec, nsec, _flags = _KTIME.unpack(raw)
    if not 0 <= nsec < NS_PER_S:
        raise PpsTimeInvalid(f"{what}: nsec {nsec} outside [0, 10^9)")
    return int(sec * NS_PER_S + nsec)


def encode_fetch(timeout_ns: int | None) -> bytearray:
    """PPS_FETCH's in/out buffer: wait up to ``timeout_ns`` for an edge (None: forever)."""
    if timeout_ns is not None and timeout_ns < 0:
        raise ValueError("timeout must not be negative")
    timeout = _ktime(0, PPS_TIME_INVALID) if timeout_ns is None else _ktime(timeout_ns)
    return bytearray(_FDATA.pack(bytes(KINFO_SIZE), timeout))


def decode_fetch(buf: bytes | bytearray) -> PpsFetch:
    """The kinfo the kernel wrote into a PPS_FETCH buffer (PpsTimeInvalid if garbled)."""
    info, _timeout = _FDATA.unpack(buf)
    a_seq, c_seq, a_tu, c_tu, mode = _KINFO.unpack(info)
    return PpsFetch(a_seq, c_seq, _ktime_ns(a_tu, "assert time"), _ktime_ns(c_tu, "clear time"),
                    mode)


def encode_params(params: PpsParams) -> bytearray:
    return bytearray(_KPARAMS.pack(params.api_version, params.mode,
                                   _ktime(params.assert_offset_ns),
                                   _ktime(params.clear_offset_ns)))


def decode_params(buf: bytes | bytearray) -> PpsParams:
    api, mode, a_off, c_off = _KPARAMS.unpack(buf)
    return PpsParams(api, mode, _ktime_ns(a_off, "assert offset"),
                     _ktime_ns(c_off, "clear offset"))


def decode_getcap(buf: bytes | bytearray) -> int:
    """PPS_GETCAP writes an int of capability bits (PPS_CAPTURE*, PPS_CANWAIT, ...)."""
    (caps,) = _INT.unpack(buf)
    return int(caps)


GETCAP_SIZE = _INT.size
