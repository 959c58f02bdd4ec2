"""Sans-IO state machine of one sock source (`[[source]] mode = "sock"`, e.g. gpsd).

The worker hands every datagram it received, with the CLOCK_MONOTONIC and
CLOCK_REALTIME instants of the wake-up, to :meth:`SockSource.handle_datagram`;
the source decodes it (core/refclock_sock.py), checks it and returns a
:class:`Publish` for a good one. Nothing here reads a clock or a socket.

The sample's uncertainty is the configured ``precision`` (1 σ, seconds), as
ntpd-rs uses it (squared, as the fixed measurement noise of a one-way source):
a feeder's samples carry no noise figure of their own. ``accuracy`` (a static
error the source may have) is reported as its root dispersion, which widens the
interval the source takes part in selection with.

Dropped, and counted per reason, besides what the codec refuses: pulse samples
(whole seconds are this source's job; a pulse-only feeder belongs to a pps
source), samples whose leap says unsynchronized, samples stamped more than
MAX_AGE_NS before the wake-up or MAX_AHEAD_NS after it (a stale queue, a feeder on
another clock), samples not newer than the last accepted one (a replay), and
samples stamped closer than MIN_SPACING_NS after the last accepted one (a flood).
"""

from __future__ import annotations

import enum
import math

from .config import SockSourceConfig
from .events import LeapIndicator, Sample, SourceKind
from .fsm import transition
from .refclock_events import Publish, RefclockStatus, Report, SetTimer, SockAction
from .refclock_sock import SockSampleRejected, parse_sock_sample
from .units import NS_PER_MS, NS_PER_S

__all__ = [
    "MAX_AGE_NS",
    "MAX_AHEAD_NS",
    "MIN_SPACING_NS",
    "REJECTIONS_BEFORE_REPORT",
    "SILENCE_NS",
    "SOCK_POLL_MAX",
    "SOCK_POLL_MIN",
    "SOCK_REFID",
    "SOCK_TRANSITIONS",
    "SockDrop",
    "SockEvent",
    "SockSource",
    "SockState",
]

MAX_AGE_NS = 4 * NS_PER_S  # gpsd sends a fix within about a second of its time
MAX_AHEAD_NS = 500 * NS_PER_MS  # stamped after we received it: not our clock
MIN_SPACING_NS = 15 * NS_PER_MS  # above 64 samples per second is a flood, not a receiver
SILENCE_NS = 16 * NS_PER_S  # no sample for this long: say so
REJECTIONS_BEFORE_REPORT = 3
SOCK_POLL_MIN, SOCK_POLL_MAX = -6, 17  # the poll reported: log2 of the feeder's spacing
SOCK_REFID = int.from_bytes(b"SOCK", "big")


class SockState(enum.StrEnum):
    WAITING = "waiting"  # nothing accepted yet
    RUNNING = "running"
    REJECTING = "rejecting"  # every recent datagram was dropped (see message)
    SILENT = "silent"  # samples came, then stopped


class SockEvent(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # REJECTIONS_BEFORE_REPORT drops in a row
    QUIET = "quiet"  # SILENCE_NS without an accepted sample, after one was


class SockDrop(enum.StrEnum):
    """Drops decided by the source (the codec's reasons are refclock_sock.SockRejectReason)."""

    PULSE = "pulse"
    UNSYNCHRONIZED = "unsynchronized"
    STALE = "stale"
    AHEAD = "ahead"
    NOT_NEWER = "not-newer"
    FLOOD = "flood"


# A state with no row for an event cannot meet it (WAITING goes quiet by staying WAITING).
SOCK_TRANSITIONS: dict[tuple[SockState, SockEvent], SockState] = {
    (SockState.WAITING, SockEvent.ACCEPTED): SockState.RUNNING,
    (SockState.WAITING, SockEvent.REJECTED): SockState.REJECTING,
    (SockState.RUNNING, SockEvent.ACCEPTED): SockState.RUNNING,
    (SockState.RUNNING, SockEvent.REJECTED): SockState.REJECTING,
    (SockState.RUNNING, SockEvent.QUIET): SockState.SILENT,
    (SockState.REJECTING, SockEvent.ACCEPTED): SockState.RUNNING,
    (SockState.REJECTING, SockEvent.REJECTED): SockState.REJECTING,
    (SockState.REJECTING, SockEvent.QUIET): SockState.SILENT,
    (SockState.SILENT, SockEvent.ACCEPTED): SockState.RUNNING,
    (SockState.SILENT, SockEvent.REJECTED): SockState.REJECTING,
}


class SockSource:
    """One sock source. Call ``start`` once, then feed datagrams and timers."""

    def __init__(self, config: SockSourceConfig, source_id: str) -> None:
        self.config = config
        self.source_id = source_id
        self._state = SockState.WAITING
        self._message = f"waiting for samples on {config.path}"
        self._samples = 0
        self._drops: dict[str, int] = {}
        self._dropped_in_a_row = 0
        self._last_time_ns: int | None = None  # feeder's stamp of the last accepted sample
        self._last_mono_ns: int | None = None  # our wake-up of the last accepted sample
        self._last_offset_s: float | None = None
        self._poll_log2 = 0
        self._deadline_ns: int | None = None

    @property
    def state(self) -> SockState:
        return self._state

    @property
    def deadline_ns(self) -> int | None:
        return self._deadline_ns

    @property
    def poll_log2(self) -> int:
        """log2 of the feeder's spacing between the last two accepted samples (0 before)."""
        return self._poll_log2

    def status(self) -> RefclockStatus:
        return RefclockStatus(self.source_id, "sock", self.config.path, self._state.value,
                              self._message, self._samples, dict(self._drops),
                              self._last_offset_s)

    def start(self, now_mono_ns: int) -> list[SockAction]:
        return [self._schedule(now_mono_ns + SILENCE_NS)]

    def handle_timer(self, now_mono_ns: int) -> list[SockAction]:
        if self._deadline_ns is None or now_mono_ns < self._deadline_ns:
            return [] if self._deadline_ns is None else [SetTimer(self._deadline_ns)]
        last = self._last_mono_ns
        if last is None:  # never had a sample: keep waiting, nothing changes
            return [self._schedule(now_mono_ns + SILENCE_NS)]
        quiet_for = now_mono_ns - last
        if quiet_for < SILENCE_NS:
            return [self._schedule(last + SILENCE_NS)]
        actions = self._enter(SockEvent.QUIET,
                              f"no sample on {self.config.path} for {quiet_for // NS_PER_S} s")
        return [*actions, self._schedule(now_mono_ns + SILENCE_NS)]

    def handle_datagram(self, data: bytes, recv_mono_ns: int,
                        recv_realtime_ns: int) -> list[SockAction]:
        """One datagram received at (``recv_mono_ns``, ``recv_realtime_ns``)."""
        try:
            parsed = parse_sock_sample(data)
        except SockSampleRejected as exc:
            return self._drop(str(exc.reason), str(exc))
        age_ns = recv_realtime_ns - parsed.time_ns
        last_time = self._last_time_ns
        if parsed.pulse:
            return self._drop(SockDrop.PULSE, "a pulse-only sample (use a pps source for pulses)")
        if parsed.leap is LeapIndicator.UNSYNCHRONIZED:
            return self._drop(SockDrop.UNSYNCHRONIZED, "the feeder says it is not synchronized")
        if age_ns > MAX_AGE_NS:
            return self._drop(SockDrop.STALE, f"sample {age_ns / NS_PER_S:.3f} s old")
        if age_ns < -MAX_AHEAD_NS:
            return self._drop(SockDrop.AHEAD,
                              f"sample stamped {-age_ns / NS_PER_S:.3f} s after it arrived")
        if last_time is not None and parsed.time_ns <= last_time:
            return self._drop(SockDrop.NOT_NEWER, "sample not newer than the last one")
        if last_time is not None and parsed.time_ns - last_time < MIN_SPACING_NS:
            # by the feeder's own stamps: several good samples read in one wake-up share
            # its receive time, and the stamps are already bound to it (stale, ahead)
            return self._drop(SockDrop.FLOOD, "samples stamped closer than 15 ms apart")
        if last_time is not None:
            # the feeder's rate, as the poll interval (gpsd: one per second, or per cycle)
            gap_s = (parsed.time_ns - last_time) / NS_PER_S
            self._poll_log2 = max(SOCK_POLL_MIN, min(SOCK_POLL_MAX, round(math.log2(gap_s))))
        self._last_time_ns, self._last_mono_ns = parsed.time_ns, recv_mono_ns
        self._last_offset_s = parsed.offset_s
        self._samples += 1
        self._dropped_in_a_row = 0
        sample = Sample(
            source_id=self.source_id, kind=SourceKind.SOCK, offset_s=parsed.offset_s,
            delay_s=0.0, uncertainty_s=self.config.precision_s, root_delay_s=0.0,
            root_dispersion_s=self.config.accuracy, stratum=0, leap=parsed.leap,
            reference_id=SOCK_REFID,
            # the instant the offset refers to, on both clocks
            mono_ns=recv_mono_ns - age_ns, realtime_ns=parsed.time_ns,
            poll_log2=self._poll_log2)
        actions: list[SockAction] = []
        if self._state is not SockState.RUNNING:
            actions += self._enter(SockEvent.ACCEPTED, f"receiving samples on {self.config.path}")
        actions.append(Publish(sample))
        return actions

    # --- helpers -------------------------------------------------------------------------------

    def _drop(self, reason: str, text: str) -> list[SockAction]:
        self._drops[reason] = self._drops.get(reason, 0) + 1
        if reason == SockDrop.FLOOD:
            return []  # the accepted samples keep coming: the source itself is fine
        self._dropped_in_a_row += 1
        if self._dropped_in_a_row < REJECTIONS_BEFORE_REPORT:
            return []
        text = f"{text} ({self._dropped_in_a_row} datagrams in a row dropped)"
        if self._state is SockState.REJECTING:
            self._message = text  # status() shows the count; no Report per datagram
            return []
        return self._enter(SockEvent.REJECTED, text)

    def _enter(self, event: SockEvent, message: str) -> list[SockAction]:
        state = transition(SOCK_TRANSITIONS, self._state, event, self.source_id)
        changed = (state, message) != (self._state, self._message)
        self._state, self._message = state, message
        return [Report(self.status())] if changed else []

    def _schedule(self, deadline_ns: int) -> SetTimer:
        self._deadline_ns = deadline_ns
        return SetTimer(deadline_ns)
