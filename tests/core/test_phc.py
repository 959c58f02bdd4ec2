"""core/phc.py: ioctl buffers built and decoded from the documented kernel layouts."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.errors import RemoteSourceError
from ntpd_py.core.phc import (
    CAPS_SIZE,
    EXTENDED_SIZE,
    PRECISE_SIZE,
    SYS_OFFSET_SIZE,
    PhcReadingRejected,
    Reading,
    decode_caps,
    decode_extended,
    decode_precise,
    decode_sys_offset,
    encode_extended,
    encode_sys_offset,
)

NS = 1_000_000_000
T0 = 1_795_000_000 * NS  # an instant in 2026


# Buffers are built here by hand from the UAPI layouts (peers-and-kernel-abi.md §1), not with
# core's own structs, so a wrong offset in core/phc.py cannot cancel out in the test.
def _clock_time(ns: int) -> bytes:
    sec, nsec = divmod(ns, NS)
    return struct.pack("<q", sec) + struct.pack("<I", nsec) + b"\0\0\0\0"  # sec, nsec, reserved


def _sys_offset_buf(n: int, stamps: list[int]) -> bytes:
    body = b"".join(_clock_time(t) for t in stamps)
    return (struct.pack("<I", n) + b"\0" * 12 + body).ljust(832, b"\0")


def _extended_buf(n: int, triplets: list[tuple[int, int, int]]) -> bytes:
    body = b"".join(_clock_time(t) for trip in triplets for t in trip)
    return (struct.pack("<I", n) + struct.pack("<i", 0) + b"\0" * 8 + body).ljust(1216, b"\0")


def _precise_buf(device: int, realtime: int, monoraw: int) -> bytes:
    return _clock_time(device) + _clock_time(realtime) + _clock_time(monoraw) + b"\0" * 16


def test_sizes_match_the_kernel_abi() -> None:
    assert (CAPS_SIZE, SYS_OFFSET_SIZE, EXTENDED_SIZE, PRECISE_SIZE) == (80, 832, 1216, 64)


def test_decode_caps_reads_each_named_field() -> None:
    ints = [999_999_881, 0, 2, 3, 1, 4, 1, 0, 5000] + [0] * 11
    caps = decode_caps(struct.pack("<20i", *ints))
    assert caps.max_adj_ppb == 999_999_881
    assert (caps.n_ext_ts, caps.n_per_out, caps.n_pins) == (2, 3, 4)
    assert caps.pps and caps.cross_timestamping and not caps.adjust_phase
    assert caps.max_phase_adj_ns == 5000


def test_decode_basic_shares_stamps_between_readings() -> None:
    # sys0 phc0 sys1 phc1 sys2: reading i = (sys_i, phc_i, sys_i+1)
    stamps = [T0, T0 + 5_000_400, T0 + 1_000, T0 + 5_001_500, T0 + 2_100]
    readings = decode_sys_offset(_sys_offset_buf(2, stamps))
    assert readings == [Reading(T0, T0 + 5_000_400, T0 + 1_000),
                        Reading(T0 + 1_000, T0 + 5_001_500, T0 + 2_100)]


def test_decode_extended_triplets_and_nanosecond_carry() -> None:
    trips = [(T0 + 999_999_999, T0 + NS + 12, T0 + NS + 400), (T0 + NS + 500, T0 + NS + 900,
                                                                 T0 + NS + 1_300)]
    assert decode_extended(_extended_buf(2, trips)) == [Reading(*t) for t in trips]


def test_decode_precise() -> None:
    got = decode_precise(_precise_buf(T0 + 7, T0 + 3, 123_456_789_012))
    assert (got.device_ns, got.sys_realtime_ns, got.sys_monoraw_ns) == (T0 + 7, T0 + 3,
                                                                       123_456_789_012)
    assert got.as_reading() == Reading(T0 + 3, T0 + 7, T0 + 3)


def test_decode_rejects_bad_nanoseconds_and_counts() -> None:
    buf = bytearray(_extended_buf(1, [(T0, T0, T0)]))
    struct.pack_into("<I", buf, 16 + 16 + 8, NS)  # the PHC stamp's nsec field
    with pytest.raises(PhcReadingRejected) as info:
        decode_extended(buf)
    assert info.value.kind == "nonsense" and isinstance(info.value, RemoteSourceError)
    with pytest.raises(ValueError):
        decode_sys_offset(_sys_offset_buf(26, []))
    with pytest.raises(ValueError):
        decode_precise(b"\0" * 63)


def test_encode_requests() -> None:
    assert struct.unpack_from("<I3I", encode_sys_offset(25)) == (25, 0, 0, 0)
    assert struct.unpack_from("<Ii2I", encode_extended(7)) == (7, 0, 0, 0)
    for bad in (0, 26):
        with pytest.raises(ValueError):
            encode_extended(bad)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(-10**9, 10**9),
                          st.integers(0, 10**6)), min_size=1, max_size=25))
def test_extended_round_trip(parts: list[tuple[int, int, int]]) -> None:
    trips, t = [], T0
    for gap, off, window in parts:
        before = t + gap
        trips.append((before, before + window // 2 + off, before + window))
        t = before + window
    assert decode_extended(_extended_buf(len(trips), trips)) == [Reading(*x) for x in trips]
