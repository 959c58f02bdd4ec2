"""Sans-IO NTP client for one server: when to poll, what to send, which replies to trust.

The worker drives it (ntpd-rs ntp-proto style):

* :meth:`NtpClient.handle_timer` at start and whenever the last
  :class:`SetTimer` deadline passes; it returns a :class:`Send` (a new
  request) and the next :class:`SetTimer`.
* :meth:`NtpClient.handle_reply` for every datagram that arrives on the
  request's socket, with the local send time and the kernel receive time.
  It returns :class:`Publish` (a checked :class:`~ntpd_py.core.events.Sample`)
  or nothing (the reply was counted under its reason and dropped), or
  :class:`Demobilize` for a DENY/RSTR kiss.
* :meth:`NtpClient.advise_poll` when the algorithm sends ``AdvisePoll``.

What the I/O layer must do (it is not done here): send every request from a
fresh socket with a random ephemeral source port (RFC 9109), connected to the
server so the kernel drops datagrams from other addresses; take the send time
as late as possible (right before ``send``, or the kernel's TX timestamp) and
the receive time from the kernel (``SO_TIMESTAMPNS``).

Each request carries 64 random bits as its transmit timestamp (no local time
leaks, and an off-path attacker cannot guess it); a reply counts only if its
origin timestamp echoes them, which is checked before anything else a reply
could change, kiss codes included. The checks follow RFC 5905 and the notes in
``peers-and-kernel-abi.md`` §4; each reply gets exactly one outcome in
:class:`ReplyOutcome`, counted in :attr:`NtpClient.counters`.

Loop detection: a server of stratum > 1 whose reference id equals the
reference id of one of our own addresses (``local_refids``: IPv4 address, or
the first 4 bytes of the MD5 of an IPv6 address, RFC 5905) is synchronized
to us and is not used (:func:`~ntpd_py.core.packet.refid_for_address` makes
them). Stratum-1 servers name a reference clock, not an address, so they are
exempt (as in ntpd-rs).

Polling: a burst of ``burst_count`` requests ``burst_interval_ns`` apart at
start (up to twice as many while unanswered) so the first samples come within
seconds, then one request per ``2**poll`` s, lengthened by up to
``poll_jitter`` at random; ``poll`` is the advised interval, clamped to the
limits and raised by RATE kisses. The reach register shifts at each poll and
records answered ones; :class:`ReportUnreachable` is emitted once per outage, after
``startup_unreachable_polls`` unanswered polls if the server never answered,
else after ``unreachable_polls`` (an empty register); polling goes on.

Kiss codes (only with a matching origin): RATE raises a floor under the poll
interval to at least one step above the interval that was in use and at least
the poll the server put in the kiss, within ``poll-interval-limits``
(configured limits win over the server's wish, as in ntpd-rs) for the life of
the association; the start-up burst stops. DENY and RSTR demobilize the
source. Other codes are ignored. None of them is ever a time sample.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import PacketError
from .events import LeapIndicator, Sample, SourceKind
from .ntp_client_types import (
    ClientAction,
    Demobilize,
    DemobilizeReason,
    LocalTime,
    Publish,
    ReplyOutcome,
    ReportUnreachable,
    Send,
    SetTimer,
)
from .packet import (
    KISS_DENY,
    KISS_RATE,
    KISS_RSTR,
    Mode,
    NtpPacket,
    client_request,
    kiss_code,
    parse,
)
from .timestamps import ntp64_diff, ntp64_to_unix_ns_near, short_to_s
from .units import NS_PER_S

__all__ = [
    "ClientAction",
    "ClientSettings",
    "ClientStatus",
    "Demobilize",
    "DemobilizeReason",
    "LocalTime",
    "NtpClient",
    "Publish",
    "ReplyOutcome",
    "ReportUnreachable",
    "Send",
    "SetTimer",
]

BURST_INTERVAL_NS = 2 * NS_PER_S
REPLY_WINDOW_NS = 5 * NS_PER_S  # a reply later than this after its request is not used
MAX_STRATUM = 15


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the client needs from the configuration (see ``ServerSourceConfig``)."""

    source_id: str
    poll_min: int = 4  # poll-interval-limits, log2 s
    poll_max: int = 10
    initial_poll: int = 4
    version: int = 4
    burst_count: int = 4  # requests 2 s apart at start; up to twice as many if unanswered
    burst_interval_ns: int = BURST_INTERVAL_NS
    max_stratum: int = MAX_STRATUM  # lower it to local-stratum - 1
    max_root_distance_s: float = 1.0  # RFC 5905 MAXDIST
    local_precision_s: float = 1e-7
    local_refids: frozenset[int] = frozenset()
    startup_unreachable_polls: int = 4
    unreachable_polls: int = 8  # the reach register is empty
    poll_jitter: float = 0.05  # each interval is lengthened by up to this fraction

    def __post_init__(self) -> None:
        if not self.poll_min <= self.initial_poll <= self.poll_max:
            raise ValueError("initial_poll must lie within poll_min..poll_max")
        if self.version not in (3, 4):
            raise ValueError("version must be 3 or 4")


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """A copy of the client's state for observers."""

    reach: int
    unanswered_polls: int
    poll_log2: int
    rate_floor_log2: int
    burst_left: int
    counters: dict[str, int]


@dataclass(slots=True)
class _Outstanding:
    origin: int
    sent_mono_ns: int


@dataclass(slots=True)
class _Poll:
    advised: int
    floor: int
    last_send_mono_ns: int | None = None
    jitter: float = 0.0
    next_send_mono_ns: int | None = None
    counters: dict[str, int] = field(default_factory=dict)


class NtpClient:
    """The client side of one association (mode 3 requests, mode 4 replies)."""

    def __init__(
        self, settings: ClientSettings, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self.settings = settings
        self._random = random_bytes
        self._poll = _Poll(advised=settings.initial_poll, floor=settings.poll_min)
        self._outstanding: _Outstanding | None = None
        self._last_origin = 0
        self._last_transmit = 0
        self._reach = 0
        self._unanswered = 0
        self._ever_answered = False
        self._unreachable_reported = False
        self._burst_left = settings.burst_count
        self._burst_sends_left = 2 * settings.burst_count
        self.counters: dict[str, int] = {outcome.value: 0 for outcome in ReplyOutcome}
        self.last_other_kiss = ""

    # -- polling ------------------------------------------------------------------------

    @property
    def poll_log2(self) -> int:
        """The poll interval in force (advised, raised by RATE kisses, within the limits)."""
        s = self.settings
        return min(max(self._poll.advised, self._poll.floor, s.poll_min), s.poll_max)

    @property
    def next_deadline_ns(self) -> int | None:
        return self._poll.next_send_mono_ns

    def status(self) -> ClientStatus:
        return ClientStatus(
            reach=self._reach,
            unanswered_polls=self._unanswered,
            poll_log2=self.poll_log2,
            rate_floor_log2=self._poll.floor,
            burst_left=self._burst_left,
            counters=dict(self.counters),
        )

    def handle_timer(self, now_mono_ns: int) -> list[ClientAction]:
        """Poll if it is time; always returns the timer to set next."""
        due = self._poll.next_send_mono_ns
        if due is not None and now_mono_ns < due:
            return [SetTimer(due)]
        actions: list[ClientAction] = []
        if self._outstanding is not None:
            self._unanswered += 1
            limit = (
                self.settings.unreachable_polls
                if self._ever_answered
                else self.settings.startup_unreachable_polls
            )
            if self._unanswered >= limit and not self._unreachable_reported:
                self._unreachable_reported = True
                actions.append(ReportUnreachable(self._unanswered))
        self._reach = (self._reach << 1) & 0xFF
        origin = int.from_bytes(self._random(8), "big") or 1
        self._outstanding = _Outstanding(origin, now_mono_ns)
        self._poll.last_send_mono_ns = now_mono_ns
        spread = int.from_bytes(self._random(2), "big") / 65535
        self._poll.jitter = self.settings.poll_jitter * spread
        if self._burst_sends_left > 0:
            self._burst_sends_left -= 1
        if self._burst_sends_left == 0:
            self._burst_left = 0
        actions.append(Send(client_request(origin, self.poll_log2, self.settings.version)))
        actions.append(SetTimer(self._schedule(now_mono_ns)))
        return actions

    def advise_poll(self, poll_log2: int, now_mono_ns: int) -> list[ClientAction]:
        """The algorithm's wish for the poll interval (log2 s); clamped to the limits."""
        self._poll.advised = poll_log2
        if self._poll.last_send_mono_ns is None or self._burst_left > 0:
            return []
        return self._reschedule(now_mono_ns)

    def _interval_ns(self) -> int:
        if self._burst_left > 0:
            return self.settings.burst_interval_ns
        poll = self.poll_log2
        base_ns = NS_PER_S << poll if poll >= 0 else NS_PER_S >> -poll
        return int(base_ns * (1.0 + self._poll.jitter))

    def _schedule(self, now_mono_ns: int) -> int:
        last = self._poll.last_send_mono_ns
        base = now_mono_ns if last is None else last
        deadline = max(base + self._interval_ns(), now_mono_ns)
        self._poll.next_send_mono_ns = deadline
        return deadline

    def _reschedule(self, now_mono_ns: int) -> list[ClientAction]:
        old = self._poll.next_send_mono_ns
        new = self._schedule(now_mono_ns)
        return [] if new == old else [SetTimer(new)]

    # -- replies ------------------------------------------------------------------------

    def handle_reply(self, data: bytes, sent: LocalTime, received: LocalTime) -> list[ClientAction]:
        """Check one datagram; ``sent`` is when the request left, ``received`` when this came."""
        outcome, actions = self._check_reply(data, sent, received)
        self.counters[outcome.value] += 1
        return actions

    def _check_reply(
        self, data: bytes, sent: LocalTime, received: LocalTime
    ) -> tuple[ReplyOutcome, list[ClientAction]]:
        try:
            reply = parse(data)
        except PacketError:
            return ReplyOutcome.MALFORMED, []
        if reply.mode != Mode.SERVER:
            return ReplyOutcome.WRONG_MODE, []
        if reply.version not in (3, 4):
            return ReplyOutcome.BAD_VERSION, []
        pending = self._outstanding
        if pending is None or received.mono_ns - pending.sent_mono_ns > REPLY_WINDOW_NS:
            if self._last_origin and reply.origin_ts == self._last_origin:
                return ReplyOutcome.DUPLICATE, []
            return ReplyOutcome.UNEXPECTED, []
        if reply.origin_ts != pending.origin:
            return ReplyOutcome.BOGUS_ORIGIN, []
        # From here on the reply answers our request: nothing else may use it.
        self._outstanding = None
        self._last_origin = pending.origin
        if reply.transmit_ts and reply.transmit_ts == self._last_transmit:
            return ReplyOutcome.DUPLICATE, []
        if reply.is_kiss:
            return self._handle_kiss(reply, received.mono_ns)
        self._mark_reachable()
        self._last_transmit = reply.transmit_ts
        if reply.receive_ts == 0 or reply.transmit_ts == 0:
            return ReplyOutcome.ZERO_TIMESTAMP, []
        if reply.leap == LeapIndicator.UNSYNCHRONIZED or reply.stratum >= 16:
            return ReplyOutcome.UNSYNCHRONIZED, []
        if reply.stratum > self.settings.max_stratum:
            return ReplyOutcome.STRATUM, []
        if reply.stratum > 1 and reply.reference_id in self.settings.local_refids:
            return ReplyOutcome.LOOP, []
        if reply.reference_ts and ntp64_diff(reply.transmit_ts, reply.reference_ts) < 0:
            return ReplyOutcome.BAD_REFTIME, []
        return self._measure(reply, sent, received)

    def _mark_reachable(self) -> None:
        self._reach |= 1
        self._unanswered = 0
        self._ever_answered = True
        self._unreachable_reported = False

    def _handle_kiss(
        self, reply: NtpPacket, now_mono_ns: int
    ) -> tuple[ReplyOutcome, list[ClientAction]]:
        code = reply.reference_id
        if code == KISS_RATE:
            s = self.settings
            wanted = max(self._poll.floor + 1, self.poll_log2 + 1, reply.poll)
            self._poll.floor = min(max(wanted, s.poll_min), s.poll_max)
            self._burst_left = 0
            self._burst_sends_left = 0
            return ReplyOutcome.KOD_RATE, self._reschedule(now_mono_ns)
        if code == KISS_DENY:
            return ReplyOutcome.KOD_DENY, [Demobilize(DemobilizeReason.DENY)]
        if code == KISS_RSTR:
            return ReplyOutcome.KOD_RSTR, [Demobilize(DemobilizeReason.RSTR)]
        # Other codes (INIT, STEP, …) carry no time and change nothing.
        self.last_other_kiss = kiss_code(code)
        return ReplyOutcome.KOD_OTHER, []

    def _measure(
        self, reply: NtpPacket, sent: LocalTime, received: LocalTime
    ) -> tuple[ReplyOutcome, list[ClientAction]]:
        t1 = sent.realtime_ns
        t4 = received.realtime_ns
        t2 = ntp64_to_unix_ns_near(reply.receive_ts, t1)
        t3 = ntp64_to_unix_ns_near(reply.transmit_ts, t1)
        delay_ns = (t4 - t1) - (t3 - t2)
        server_precision_s = 2.0**reply.precision
        if delay_ns < 0:
            tolerance_ns = (server_precision_s + self.settings.local_precision_s) * NS_PER_S
            if -delay_ns > tolerance_ns:
                return ReplyOutcome.BAD_DELAY, []
            delay_ns = 0
        delay_s = delay_ns / NS_PER_S
        root_delay_s = short_to_s(reply.root_delay)
        root_disp_s = short_to_s(reply.root_dispersion)
        distance = (root_delay_s + delay_s) / 2 + root_disp_s + server_precision_s
        if distance > self.settings.max_root_distance_s:
            return ReplyOutcome.ROOT_DISTANCE, []
        sample = Sample(
            source_id=self.settings.source_id,
            kind=SourceKind.NTP,
            offset_s=((t2 - t1) + (t3 - t4)) / 2 / NS_PER_S,
            delay_s=delay_s,
            uncertainty_s=0.0,
            root_delay_s=root_delay_s,
            root_dispersion_s=root_disp_s,
            stratum=reply.stratum,
            leap=reply.leap,
            reference_id=reply.reference_id,
            mono_ns=(sent.mono_ns + received.mono_ns) // 2,
            realtime_ns=(t1 + t4) // 2,
            poll_log2=self.poll_log2,
        )
        actions: list[ClientAction] = [Publish(sample)]
        if self._burst_left > 0:
            self._burst_left -= 1
            if self._burst_left == 0:
                self._burst_sends_left = 0
                actions.extend(self._reschedule(received.mono_ns))
        return ReplyOutcome.ACCEPTED, actions
