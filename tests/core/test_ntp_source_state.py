"""The NTP source's state table, walked pair by pair."""

from __future__ import annotations

import pytest
from ntpd_py.core.fsm import IllegalTransition
from ntpd_py.core.ntp_source_state import (
    NTP_SOURCE_TRANSITIONS,
    NtpSourceEvent,
    NtpSourceState,
    next_state,
)
from ntpd_py.ipc.messages import SourceStatus

from tests.fsm_walk import walk_table


def test_the_table_is_walked_pair_by_pair() -> None:
    illegal = walk_table(NTP_SOURCE_TRANSITIONS, NtpSourceState, NtpSourceEvent)
    # a demobilized source never comes back; nothing is polled before it resolves
    assert (NtpSourceState.FAILED, NtpSourceEvent.SAMPLE) in illegal
    assert (NtpSourceState.STARTING, NtpSourceEvent.SAMPLE) in illegal
    with pytest.raises(IllegalTransition, match="'sample' is not allowed in state 'failed'"):
        next_state(NtpSourceState.FAILED, NtpSourceEvent.SAMPLE, "ntp:x")


def test_failed_is_final() -> None:
    assert not [pair for pair in NTP_SOURCE_TRANSITIONS if pair[0] is NtpSourceState.FAILED]


def test_every_state_is_a_state_the_wire_accepts() -> None:
    for state in NtpSourceState:
        SourceStatus(source_id="ntp:x", kind="ntp", name="x", state=state.value, poll_log2=6)
