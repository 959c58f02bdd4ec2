"""Drift file text: round trip, and corrupt or absurd files are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.drift import DriftFileError, encode_drift, parse_drift


def test_round_trip() -> None:
    text = encode_drift(12.345678e-6, 0.004321e-6)
    assert text.startswith("# ntpd-py drift file")
    freq, unc = parse_drift(text)
    assert freq == pytest.approx(12.345678e-6, abs=1e-12)
    assert unc == pytest.approx(0.004321e-6, abs=1e-12)


@given(st.floats(min_value=-500e-6, max_value=500e-6), st.floats(min_value=1e-12, max_value=1e-4))
def test_round_trip_property(freq: float, unc: float) -> None:
    back_freq, back_unc = parse_drift(encode_drift(freq, unc))
    assert back_freq == pytest.approx(freq, abs=1e-12)
    assert back_unc == pytest.approx(max(unc, 1e-12), abs=1e-12)


def test_plain_line_is_accepted() -> None:
    assert parse_drift("-3.5 0.25\n") == pytest.approx((-3.5e-6, 0.25e-6))


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "1.0\n", "1.0 2.0 3.0\n", "abc 0.1\n", "nan 0.1\n",
    "1.0 inf\n", "600 0.1\n", "1.0 0\n", "1.0 -0.1\n", "1.0 0.1\n2.0 0.1\n", "1" * 5000,
    "\x00\x00\x00",
])
def test_corrupt_or_absurd_files_are_refused(text: str) -> None:
    with pytest.raises(DriftFileError):
        parse_drift(text)


def test_encode_refuses_absurd_values() -> None:
    with pytest.raises(DriftFileError):
        encode_drift(1e-3, 1e-6)
