"""The NTP source worker's state (what `ntpctl status` shows for it) as a table.

The NtpClient (core/ntp_client.py) speaks the protocol; this machine only says
where the source stands: resolving its host, polling, unreachable, or given up
after a kiss of death. The values are the strings on the wire
(`SourceStatus.state`).
"""

from __future__ import annotations

from enum import StrEnum

from .fsm import transition

__all__ = ["NTP_SOURCE_TRANSITIONS", "NtpSourceEvent", "NtpSourceState", "next_state"]


class NtpSourceState(StrEnum):
    STARTING = "starting"  # not resolved yet
    WAITING = "waiting"  # its host does not resolve (retried)
    RUNNING = "running"  # polling; answered, or not yet unreachable
    UNREACHABLE = "unreachable"  # the reach register emptied
    FAILED = "failed"  # demobilized by a kiss of death: never polled again


class NtpSourceEvent(StrEnum):
    RESOLVE_FAILED = "resolve-failed"
    RESOLVED = "resolved"
    SAMPLE = "sample"  # a reply gave a sample
    UNREACHABLE = "unreachable"  # the client reports no reply to its last polls
    DENIED = "denied"  # DENY/RSTR kiss: demobilize


_S, _E = NtpSourceState, NtpSourceEvent
NTP_SOURCE_TRANSITIONS: dict[tuple[NtpSourceState, NtpSourceEvent], NtpSourceState] = {
    (_S.STARTING, _E.RESOLVE_FAILED): _S.WAITING,
    (_S.WAITING, _E.RESOLVE_FAILED): _S.WAITING,
    (_S.STARTING, _E.RESOLVED): _S.RUNNING,
    (_S.WAITING, _E.RESOLVED): _S.RUNNING,
    (_S.RUNNING, _E.SAMPLE): _S.RUNNING,
    (_S.UNREACHABLE, _E.SAMPLE): _S.RUNNING,
    (_S.RUNNING, _E.UNREACHABLE): _S.UNREACHABLE,
    (_S.UNREACHABLE, _E.UNREACHABLE): _S.UNREACHABLE,
    (_S.RUNNING, _E.DENIED): _S.FAILED,
    (_S.UNREACHABLE, _E.DENIED): _S.FAILED,
}


def next_state(state: NtpSourceState, event: NtpSourceEvent, source_id: str) -> NtpSourceState:
    """Follow the table; IllegalTransition (a ValueError) for a pair it does not list."""
    return transition(NTP_SOURCE_TRANSITIONS, state, event, source_id)
