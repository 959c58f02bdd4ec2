"""Leap seconds: what the sources announce, and when to arm the kernel.

NTP servers announce a leap second for days or weeks before it happens; the
kernel's STA_INS/STA_DEL act at the end of the *current* UTC day. So the vote
of the selected sources decides *whether* there is a leap, and the calendar
decides *when* to arm: only during the last UTC day of a month (leap seconds
are inserted at the end of a month, in practice June or December). After the
month has turned, the flag is cleared again.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence

from .events import LeapIndicator
from .units import NS_PER_S

__all__ = ["leap_to_arm", "leap_vote", "next_leap_change_ns"]

_DAY_NS = 86_400 * NS_PER_S


def leap_vote(leaps: Sequence[LeapIndicator]) -> LeapIndicator:
    """INSERT or DELETE when more than half of the synchronized sources announce it."""
    voters = [leap for leap in leaps if leap is not LeapIndicator.UNSYNCHRONIZED]
    for kind in (LeapIndicator.INSERT, LeapIndicator.DELETE):
        if 2 * sum(1 for leap in voters if leap is kind) > len(voters):
            return kind
    return LeapIndicator.NONE


def _month_bounds_ns(real_ns: int) -> tuple[int, int]:
    """Start of the last UTC day of the month of ``real_ns``, and start of the next month."""
    day = dt.datetime.fromtimestamp(real_ns // NS_PER_S, tz=dt.UTC)
    days = calendar.monthrange(day.year, day.month)[1]
    first = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    month_start_ns = calendar.timegm(first.timetuple()) * NS_PER_S
    next_month_ns = month_start_ns + days * _DAY_NS
    return next_month_ns - _DAY_NS, next_month_ns


def leap_to_arm(vote: LeapIndicator, real_ns: int) -> LeapIndicator:
    """What the kernel's leap flag should be now, given the sources' vote."""
    if vote not in (LeapIndicator.INSERT, LeapIndicator.DELETE):
        return LeapIndicator.NONE
    last_day, _ = _month_bounds_ns(real_ns)
    return vote if real_ns >= last_day else LeapIndicator.NONE


def next_leap_change_ns(real_ns: int) -> int:
    """The next realtime instant at which :func:`leap_to_arm` can change its answer.

    One second after the month turns, so that an inserted leap second (which
    repeats the last second of the month) is over before the flag is cleared.
    """
    last_day, next_month = _month_bounds_ns(real_ns)
    return last_day if real_ns < last_day else next_month + NS_PER_S
