"""core/phc.py: ioctl buffer decoding from the documented layouts, estimation, the Sample."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.errors import RemoteSourceError
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.phc import (
    CAPS_SIZE,
    EXTENDED_SIZE,
    PRECISE_SIZE,
    SYS_OFFSET_SIZE,
    Estimator,
    PhcReadingRejected,
    Reading,
    build_sample,
    decode_caps,
    decode_extended,
    decode_precise,
    decode_sys_offset,
    encode_extended,
    encode_sys_offset,
    estimate,
    reference_id,
    sample_uncertainty_s,
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


def test_offset_sign_is_reference_minus_local_like_ntp() -> None:
    # The PHC reads 5 µs ahead of the system clock: the local clock is behind the reference,
    # so the offset is +5 µs (the clock must move forward), as for an NTP server that is ahead.
    r = Reading(T0, T0 + 500 + 5_000, T0 + 1_000)
    assert r.offset_ns == 5_000
    # NTP: offset = ((t2 - t1) + (t3 - t4)) / 2 with t1/t4 local, t2/t3 server; a PHC read
    # is a server whose t2 = t3 = phc.
    t1, t2, t3, t4 = r.sys_before_ns, r.phc_ns, r.phc_ns, r.sys_after_ns
    assert r.offset_ns == ((t2 - t1) + (t3 - t4)) // 2
    est = estimate([r])
    sample = build_sample(est, _config(), source_id="ptp0", device_index=0,
                          mono_ns=50 * NS, realtime_ns=T0 + 2_000)
    assert sample.offset_s == pytest.approx(5e-6) and sample.offset_s > 0


def test_min_window_keeps_the_tightest_reading() -> None:
    readings = [Reading(T0, T0 + 900, T0 + 1_000), Reading(T0 + 2_000, T0 + 2_300, T0 + 2_400),
                Reading(T0 + 3_000, T0 + 3_700, T0 + 3_800)]
    est = estimate(readings)
    assert (est.offset_ns, est.window_ns, est.realtime_ns, est.used, est.total) == (
        100, 400, T0 + 2_200, 1, 3)


def test_low_quartile_mean_leaves_out_windows_over_twice_the_smallest() -> None:
    readings = [Reading(T0 + i * 10_000, T0 + i * 10_000 + w // 2 + off, T0 + i * 10_000 + w)
                for i, (w, off) in enumerate([(100, 10), (250, 900), (5_000, 0), (3_000, 0),
                                              (400, 0), (300, 0), (900, 0), (800, 0)])]
    est = estimate(readings, Estimator.LOW_QUARTILE_MEAN)  # quarter = 100 and 250 ns
    assert (est.used, est.offset_ns, est.window_ns) == (1, 10, 100)


def test_low_quartile_mean_averages_the_tightest_quarter() -> None:
    readings = [Reading(T0 + i * 10_000, T0 + i * 10_000 + w // 2 + off, T0 + i * 10_000 + w)
                for i, (w, off) in enumerate([(400, 10), (1_000, 900), (402, -20), (5_000, 0),
                                              (3_000, 0), (2_000, 0), (800, 0), (900, 0)])]
    est = estimate(readings, Estimator.LOW_QUARTILE_MEAN)
    assert est.used == 2 and est.window_ns == 402
    assert est.offset_ns == -5  # mean of +10 and -20
    assert est.realtime_ns == T0 + (200 + 20_201) // 2 + 1  # mean midpoint, rounded


@pytest.mark.parametrize(("readings", "kind"), [
    ([Reading(T0, T0, T0 + 10), Reading(T0 + 20, T0 + 25, T0 + 19)], "stepped"),
    ([Reading(T0, T0, T0 + 10), Reading(T0 + 5, T0 + 25, T0 + 30)], "stepped"),
    ([Reading(T0, T0, T0 + NS + 1)], "nonsense"),
    ([Reading(T0, T0 + 50, T0 + 10), Reading(T0 + 20, T0 + 40, T0 + 30)], "nonsense"),
    ([], "nonsense"),
])
def test_bad_polls_are_rejected_whole(readings: list[Reading], kind: str) -> None:
    with pytest.raises(PhcReadingRejected) as info:
        estimate(readings)
    assert info.value.kind == kind


def test_uncertainty_combines_precision_and_window() -> None:
    assert sample_uncertainty_s(1e-7, 0) == pytest.approx(1e-7)
    assert sample_uncertainty_s(1e-9, 1_200) == pytest.approx(math.hypot(1e-9, 1.2e-6 / 12**0.5))


def test_reference_ids() -> None:
    assert reference_id(0).to_bytes(4, "big") == b"PHC0"
    assert reference_id(7).to_bytes(4, "big") == b"PHC7"
    assert reference_id(12).to_bytes(4, "big") == b"PH12"
    assert reference_id(345).to_bytes(4, "big") == b"P345"
    assert reference_id(None).to_bytes(4, "big") == b"PHC?"


def _config(**kw: object) -> PtpSourceConfig:
    base: dict[str, object] = {"mode": "ptp", "path": "/dev/ptp0", "delay": 4e-5,
                               "interval": 2, "precision": 1e-7, "stratum": 1}
    return PtpSourceConfig.model_validate({**base, **kw})


def test_sample_carries_the_config_and_times() -> None:
    est = estimate([Reading(T0, T0 + 500 - 3_000, T0 + 1_000)])
    sample = build_sample(est, _config(), source_id="ptp0", device_index=1,
                          mono_ns=70 * NS, realtime_ns=T0 + 10_000)
    assert sample.kind is SourceKind.PTP and sample.leap is LeapIndicator.NONE
    assert sample.offset_s == pytest.approx(-3e-6)
    assert sample.delay_s == pytest.approx(1e-6)
    assert sample.root_delay_s == 4e-5 and sample.root_dispersion_s == 0.0
    assert sample.stratum == 1 and sample.poll_log2 == 2
    assert sample.reference_id.to_bytes(4, "big") == b"PHC1"
    assert sample.realtime_ns == T0 + 500
    assert sample.mono_ns == 70 * NS - 9_500  # the midpoint, 9.5 µs before the pair
    assert sample.uncertainty_s == pytest.approx(sample_uncertainty_s(1e-7, 1_000))


def test_sample_rejects_a_step_between_read_and_timestamp() -> None:
    est = estimate([Reading(T0, T0 + 500, T0 + 1_000)])
    with pytest.raises(PhcReadingRejected):
        build_sample(est, _config(), source_id="p", device_index=0, mono_ns=NS,
                     realtime_ns=T0 - 5 * NS)
