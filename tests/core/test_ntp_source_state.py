"""The NTP source's state table, walked pair by pair."""

from __future__ import annotations

import itertools

import pytest
from ntpd_py.core.fsm import IllegalTransition
from ntpd_py.core.ntp_source_state import (
    NTP_SOURCE_TRANSITIONS,
    NtpSourceEvent,
    NtpSourceState,
    next_state,
)
from ntpd_py.ipc.messages import SourceStatus


def test_every_listed_pair_goes_where_the_table_says() -> None:
    for (state, event), after in NTP_SOURCE_TRANSITIONS.items():
        assert next_state(state, event, "ntp:x") is after


def test_every_unlisted_pair_raises() -> None:
    illegal = [(s, e) for s, e in itertools.product(NtpSourceState, NtpSourceEvent)
               if (s, e) not in NTP_SOURCE_TRANSITIONS]
    # a demobilized source never comes back; nothing is polled before it resolves
    assert (NtpSourceState.FAILED, NtpSourceEvent.SAMPLE) in illegal
    assert (NtpSourceState.STARTING, NtpSourceEvent.SAMPLE) in illegal
    for state, event in illegal:
        with pytest.raises(IllegalTransition):
            next_state(state, event, "ntp:x")


def test_failed_is_final() -> None:
    assert not [pair for pair in NTP_SOURCE_TRANSITIONS if pair[0] is NtpSourceState.FAILED]


def test_every_state_is_a_state_the_wire_accepts() -> None:
    for state in NtpSourceState:
        SourceStatus(source_id="ntp:x", kind="ntp", name="x", state=state.value, poll_log2=6)
