"""Leap seconds: majority vote and arming on the last day of the month."""

from __future__ import annotations

import calendar
import datetime as dt

from ntpd_py.core.events import LeapIndicator as L
from ntpd_py.core.leap import leap_to_arm, leap_vote, next_leap_change_ns

S = 1_000_000_000


def at(text: str) -> int:
    return calendar.timegm(dt.datetime.fromisoformat(text).timetuple()) * S


def test_vote_needs_a_strict_majority_of_synchronized_sources() -> None:
    assert leap_vote([L.INSERT, L.INSERT, L.NONE]) is L.INSERT
    assert leap_vote([L.INSERT, L.NONE]) is L.NONE
    assert leap_vote([L.DELETE, L.UNSYNCHRONIZED]) is L.DELETE
    assert leap_vote([]) is L.NONE
    assert leap_vote([L.UNSYNCHRONIZED]) is L.NONE


def test_armed_only_on_the_last_day_of_the_month() -> None:
    assert leap_to_arm(L.INSERT, at("2026-06-29T23:59:59")) is L.NONE
    assert leap_to_arm(L.INSERT, at("2026-06-30T00:00:00")) is L.INSERT
    assert leap_to_arm(L.INSERT, at("2026-06-30T23:59:59")) is L.INSERT
    assert leap_to_arm(L.INSERT, at("2026-07-01T00:00:00")) is L.NONE
    assert leap_to_arm(L.DELETE, at("2028-02-29T12:00:00")) is L.DELETE  # leap year
    assert leap_to_arm(L.NONE, at("2026-12-31T12:00:00")) is L.NONE
    assert leap_to_arm(L.UNSYNCHRONIZED, at("2026-12-31T12:00:00")) is L.NONE


def test_next_change() -> None:
    assert next_leap_change_ns(at("2026-12-15T10:00:00")) == at("2026-12-31T00:00:00")
    assert next_leap_change_ns(at("2026-12-31T10:00:00")) == at("2027-01-01T00:00:01")
