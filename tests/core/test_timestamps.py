"""NTP timestamp formats: conversions, eras, differences, short format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.timestamps import (
    NTP64_ONE_SECOND,
    NTP_UNIX_OFFSET_S,
    ntp64_diff,
    ntp64_diff_s,
    ntp64_to_unix_ns,
    ntp64_to_unix_ns_near,
    precision_log2,
    s_to_short,
    short_to_s,
    signed64,
    unix_ns_to_ntp64,
)

NS = 1_000_000_000
ERA1_UNIX_S = 2**32 - NTP_UNIX_OFFSET_S  # 2036-02-07T06:28:16Z
# What RFC 4330's rule can represent without a pivot: 1968-01-20 … 2104-02-26.
RFC4330_FIRST_UNIX_S = 2**31 - NTP_UNIX_OFFSET_S
RFC4330_LAST_UNIX_S = ERA1_UNIX_S + 2**31 - 1


def test_unix_epoch_and_era_boundary() -> None:
    assert unix_ns_to_ntp64(0) == NTP_UNIX_OFFSET_S << 32
    assert ERA1_UNIX_S == 2_085_978_496
    # The seconds field wraps to 0 at the start of era 1.
    assert unix_ns_to_ntp64(ERA1_UNIX_S * NS) == 0
    assert unix_ns_to_ntp64((ERA1_UNIX_S - 1) * NS) == 0xFFFF_FFFF << 32
    assert ntp64_to_unix_ns(0) == ERA1_UNIX_S * NS
    assert ntp64_to_unix_ns(0xFFFF_FFFF << 32) == (ERA1_UNIX_S - 1) * NS


def test_fraction_rounds_to_nearest() -> None:
    assert unix_ns_to_ntp64(500_000_000) & 0xFFFF_FFFF == 1 << 31
    assert unix_ns_to_ntp64(1) & 0xFFFF_FFFF == 4  # 1 ns = 4.29 units
    assert unix_ns_to_ntp64(NS - 1) == (NTP_UNIX_OFFSET_S << 32) + 4_294_967_292  # 0.999999999 s


@given(st.integers(RFC4330_FIRST_UNIX_S * NS, RFC4330_LAST_UNIX_S * NS))
def test_round_trip_without_pivot_within_rfc4330_range(unix_ns: int) -> None:
    assert abs(ntp64_to_unix_ns(unix_ns_to_ntp64(unix_ns)) - unix_ns) <= 1


@given(st.integers(0, 200 * 365 * 86400 * NS), st.integers(-(2**31 - 1) * NS, (2**31 - 1) * NS))
def test_round_trip_near_a_pivot(pivot: int, distance: int) -> None:
    unix_ns = pivot + distance
    assert abs(ntp64_to_unix_ns_near(unix_ns_to_ntp64(unix_ns), pivot) - unix_ns) <= 1
    assert ntp64_to_unix_ns(unix_ns_to_ntp64(unix_ns), pivot) == ntp64_to_unix_ns_near(
        unix_ns_to_ntp64(unix_ns), pivot
    )


def test_pivot_decodes_era1_timestamps_that_the_default_rule_also_gets() -> None:
    later = (ERA1_UNIX_S + 3600) * NS
    ts = unix_ns_to_ntp64(later)
    assert ts >> 32 == 3600  # era 1, seconds restarted
    assert ntp64_to_unix_ns_near(ts, (ERA1_UNIX_S - 10) * NS) == later
    # A 1990 (era 0) timestamp decoded near a 2033 pivot stays in 1990:
    old = 631_152_000 * NS  # 1990-01-01
    assert ntp64_to_unix_ns_near(unix_ns_to_ntp64(old), 2_000_000_000 * NS) == old


@given(st.integers(0, 2**64 - 1), st.integers(-(2**62), 2**62))
def test_diff_is_modular_and_signed(a: int, delta: int) -> None:
    b = (a - delta) % 2**64
    assert ntp64_diff(a, b) == delta
    assert ntp64_diff_s(a, b) == delta / NTP64_ONE_SECOND


def test_diff_across_the_2036_rollover() -> None:
    before = unix_ns_to_ntp64((ERA1_UNIX_S - 1) * NS)
    after = unix_ns_to_ntp64((ERA1_UNIX_S + 1) * NS)
    assert after < before  # the raw values wrapped
    assert ntp64_diff(after, before) == 2 * NTP64_ONE_SECOND
    assert ntp64_diff_s(before, after) == -2.0


def test_signed64() -> None:
    assert signed64(2**64 - 1) == -1
    assert signed64(2**63) == -(2**63)
    assert signed64(2**63 - 1) == 2**63 - 1
    assert signed64(2**64 + 5) == 5


def test_short_format() -> None:
    assert short_to_s(0x0001_8000) == 1.5
    assert s_to_short(1.5) == 0x0001_8000
    assert s_to_short(1e-9) == 1  # rounded up: it is an error bound
    assert s_to_short(0.0) == 0
    assert s_to_short(-3.0) == 0
    assert s_to_short(float("nan")) == 0
    assert s_to_short(1e9) == 0xFFFF_FFFF
    assert s_to_short(float("inf")) == 0xFFFF_FFFF


@given(st.floats(0.0, 65535.0))
def test_short_format_never_understates(seconds: float) -> None:
    assert short_to_s(s_to_short(seconds)) >= seconds
    assert short_to_s(s_to_short(seconds)) - seconds < 2 / 65536


def test_precision_log2() -> None:
    assert precision_log2(1e-9) == -29
    assert precision_log2(2**-20) == -20
    assert precision_log2(1.0) == 0
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            precision_log2(bad)
