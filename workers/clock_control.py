"""The clock-control loop: samples in, clock actions out, state published.

Thin around :class:`ntpd_py.core.controller.ClockController`: it admits and
decodes frames from the bus, feeds the algorithm, carries out the actions on
the clock backend, publishes the clock state, answers `ntpctl`, and keeps the
restart snapshot and the drift file.

Every wake-up does bounded work, in this order: the supervisor link, the bus
(samples, heartbeat-relevant state), the algorithm's timers, and only then a
few control requests, which are rate-limited per connection and overall (the
rest wait in ZeroMQ's queue, the excess is refused with a cheap reply and
counted). Any exception while handling one message drops that message and is
counted per sender and reason (``error:OverflowError``): no input stops the
steering.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, assert_never

from ntpd_py.core.actions import (
    AdvisePoll,
    ClockAction,
    Panic,
    SeekAnotherServer,
    SetFrequency,
    SetSynchronized,
    Step,
)
from ntpd_py.core.controller import ClockController
from ntpd_py.core.controller_state import StepBounds
from ntpd_py.core.events import Sample, SourceKind
from ntpd_py.core.exit_codes import PanicExit
from ntpd_py.core.source_policy import (
    FalsetickerJudge,
    PanicDecision,
    diff_sources,
    on_panic,
    steering_allowed,
)
from ntpd_py.core.worker_spec import nts_pool_member
from ntpd_py.ipc.channels import Channel
from ntpd_py.ipc.framing import MalformedMessage, decode, encode
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import (
    HEARTBEAT_INTERVAL_NS,
    ClockStateMsg,
    CtlReply,
    CtlRequest,
    Heartbeat,
    LogControl,
    MsgType,
    PeerFailed,
    PollAdvice,
    ProcessInfo,
    ProcessTable,
    SampleMsg,
    ServerAdvice,
    ServerStats,
    SourceEntry,
    SourceSet,
    SourceStatus,
    Unreachable,
)
from ntpd_py.plumbing.logutil import RateLimitedLog, apply_log_control
from ntpd_py.plumbing.scheduler import Now

from .base import RIDE_ALONG_NS
from .bus_guard import BusGuard, TokenBucket
from .clock_backends import FREQUENCY_REFRESH_WINDOW_NS, ClockBackend
from .state_store import StateStore
from .status_view import build_clock_state, summary_line

__all__ = ["ClockControlTask", "PanicExit"]

# What workers may send on the bus: BUS_TYPES for the decoder, BusMessage for the handler
# (a match over it with assert_never, so mypy checks every kind is handled); a test keeps
# the two equal.
BusMessage = SampleMsg | SourceStatus | Unreachable | ServerStats
BUS_MESSAGES = (SampleMsg, SourceStatus, Unreachable, ServerStats)
BUS_TYPES = {cls.TYPE for cls in BUS_MESSAGES}
LinkMessage = LogControl | SourceSet | ProcessTable
PUBLISH_INTERVAL_NS = 1_000_000_000
# The state feed goes out with a sample that arrives within 0.3 s before or 0.25 s
# after its due time, instead of waking clock-control by itself: PHC samples come
# every second, just before or just after it. (Less than half the interval early,
# so two PHCs polled half a second apart do not double the rate.)
PUBLISH_RIDE_ALONG_NS = 300_000_000
PUBLISH_LATE_NS = 250_000_000
# Bounded work per wake-up; what is left waits in its queue (ZeroMQ's level-triggered
# poll wakes the loop again at once, after the other inputs had their turn).
MAX_FRAMES_PER_STEP = 256
MAX_LINK_FRAMES_PER_STEP = 64
MAX_CONTROL_FRAMES_PER_STEP = 32  # requests looked at (refusals are cheap)
MAX_REPLIES_PER_STEP = 4  # full status replies built (the expensive part)
# Control requests: generous for people and scripts, far below what stalls the loop.
# The per-peer bucket is keyed by the peer's uid as the kernel gives it (SO_PEERCRED), so
# reconnecting per request gains nothing; it is well under the global budget, so one uid
# flooding takes at most 40 % of it and another uid's ntpctl is still answered.
CTL_PEER_RATE_PER_S, CTL_PEER_BURST = 20.0, 20.0
CTL_GLOBAL_RATE_PER_S, CTL_GLOBAL_BURST = 50.0, 50.0
MAX_CTL_PEERS = 256  # per-peer buckets kept (least recently used go first)
CTL_REFUSED = "ctl-rate-limited"  # the peer's (uid's) own bucket was empty
CTL_BUSY = "ctl-global-limited"  # the peer had tokens, the daemon-wide budget had not
CTL_FAILED = "ctl-error"
# A sample may be stamped a little after clock-control read its clock (another process
# read the same clock later); anything beyond this is "in the future".
SAMPLE_FUTURE_SLACK_NS = 1_000_000_000
INTERNAL_RETRY_NS = 1_000_000_000  # a failing timer or publish is retried this much later
MAX_SERVER_ROWS = 64  # CtlReply.servers holds at most this many listen addresses


REFUSAL = encode(CtlReply(ok=False, error="rate limited: too many control requests "
                                          "(20/s per connection, 50/s in all); try again"))


class ClockControlTask:
    name = "clock-control"

    def __init__(
        self,
        *,
        controller: ClockController,
        backend: ClockBackend,
        bus: Channel,
        pub: Channel,
        control: Channel,
        link: Link | None,
        store: StateStore | None,
        log: logging.Logger,
        drift_text: Any = None,
    ) -> None:
        self.controller = controller
        self.backend = backend
        self.bus, self.pub, self.control, self.link = bus, pub, control, link
        self.store = store
        self.log = log
        self.limited = RateLimitedLog(log)
        self.guard = BusGuard()
        self.entries: list[SourceEntry] = []
        self.statuses: dict[str, SourceStatus] = {}
        # Server counters per (server worker, listen): several server processes share
        # one listen address (SO_REUSEPORT), so their counters are summed, not overwritten.
        self.servers: dict[tuple[str, str], dict[str, int]] = {}
        self._server_workers: frozenset[str] = frozenset()
        self._server_listens: frozenset[str] = frozenset()
        self._entries_by_id: dict[str, SourceEntry] = {}
        self._last_sample_mono: dict[str, int] = {}
        self._ctl_peers: collections.OrderedDict[bytes, TokenBucket] = collections.OrderedDict()
        self._ctl_global = TokenBucket(CTL_GLOBAL_RATE_PER_S, CTL_GLOBAL_BURST)
        self.ctl_counts: collections.Counter[str] = collections.Counter()
        self._timer_held_until = 0
        self.processes: list[ProcessInfo] = []
        self._processes_mono_ns = 0
        self.last_state: ClockStateMsg | None = None
        self._drift_text = drift_text
        self._next_publish = 0
        self._next_heartbeat = 0
        self._dirty = True
        self._falsetickers = FalsetickerJudge()
        self.panic_action: Literal["exit", "stop-steering"] = "exit"
        # [synchronization] warn-on-jump: a step is logged as a warning (as in
        # ntpd-rs), else as information.
        self.warn_on_jump = True
        self.steering_stopped = ""
        self._sent_bounds: StepBounds | None = None
        # The last frequency set, rewritten until _refresh_until (clock_backends.py:
        # FREQUENCY_REFRESH_NS, why).
        self._frequency: SetFrequency | None = None
        self._next_refresh = 0
        self._refresh_until = 0
        # Opens and closes the per-worker bus endpoints a SourceSet names (roles.py).
        self.on_slots: Callable[[SourceSet, list[int]], None] | None = None

    # -- the Task interface --------------------------------------------------------------

    def pollables(self) -> Sequence[Any]:
        # The bus is one endpoint per worker slot (ipc.channels.SlotRouter).
        slots = getattr(self.bus, "channels", None)
        items: list[Any] = [*(slots() if slots is not None else [self.bus]), self.control]
        if self.link is not None:
            items.append(self.link.fileno())
        return items

    def next_deadline_ns(self) -> int | None:
        timer = self.controller.next_timer_mono_ns()
        deadlines = [
            self._next_refresh if self._frequency is not None else None,
            self._next_publish + PUBLISH_LATE_NS,
            self._next_heartbeat if self.link else None,
            None if timer is None else max(timer, self._timer_held_until),
        ]
        return min(d for d in deadlines if d is not None)

    def step(self, now: Now) -> None:
        if self._frequency is not None and now.mono_ns >= self._next_refresh:
            self._refresh_frequency(now)
        self.limited.flush(now.mono_ns)
        self._drain_link(now)
        self._drain_bus(now)
        timer = self.controller.next_timer_mono_ns()
        if timer is not None and timer <= now.mono_ns and now.mono_ns >= self._timer_held_until:
            try:
                self._apply(self.controller.handle_timer(now_mono_ns=now.mono_ns,
                                                         now_real_ns=now.real_ns), now)
            except PanicExit:
                raise
            except Exception as exc:
                # A timer that fails stays due: hold it back a second instead of spinning.
                self._timer_held_until = now.mono_ns + INTERNAL_RETRY_NS
                self._internal_error("the algorithm's timer", exc, now)
        self._drain_control(now)
        if self._dirty or now.mono_ns + PUBLISH_RIDE_ALONG_NS >= self._next_publish:
            try:
                self._publish(now)
            except Exception as exc:
                self._next_publish = now.mono_ns + PUBLISH_INTERVAL_NS
                self._dirty = False
                self._internal_error("publishing the clock state", exc, now)
        if self.link is not None and now.mono_ns + RIDE_ALONG_NS >= self._next_heartbeat:
            summary = summary_line(self.last_state) if self.last_state else ""
            self.link.send(Heartbeat(worker_id=self.name, mono_ns=now.mono_ns, status=summary))
            self._next_heartbeat = now.mono_ns + HEARTBEAT_INTERVAL_NS

    def _refresh_frequency(self, now: Now) -> None:
        interval = getattr(self.backend, "refresh_interval_ns", None)
        if (self._frequency is None or not interval or self.steering_stopped
                or now.mono_ns >= self._refresh_until):
            self._frequency = None
            return
        try:
            self.backend.apply(self._frequency)
        except OSError as exc:
            self.limited.log(logging.WARNING, "frequency-refresh", now.mono_ns,
                             "writing the clock's frequency again failed: %s", exc)
        self._next_refresh = now.mono_ns + interval

    def _internal_error(self, what: str, exc: Exception, now: Now) -> None:
        reason = f"internal:{type(exc).__name__}"
        self.ctl_counts[reason] += 1
        self.limited.log(logging.ERROR, reason, now.mono_ns, "%s raised %s: %s (contained)",
                         what, type(exc).__name__, exc)

    # -- inputs ----------------------------------------------------------------------------

    def set_sources(
        self,
        entries: list[SourceEntry],
        now: Now,
        server_workers: Sequence[str] | None = None,
        server_listens: Sequence[str] | None = None,
    ) -> None:
        """Take the configured sources (and server workers/listens, when given).

        The rate caps come from here (the configuration), never from a worker.
        """
        new = {e.source_id: e for e in entries}
        change = diff_sources({e.source_id: e for e in self.entries}, new)
        for source_id in change.removed:  # gone, or its settings changed: start afresh
            self.controller.remove_source(source_id)
            self.statuses.pop(source_id, None)
            self._last_sample_mono.pop(source_id, None)
        for source_id in change.forgotten:
            self.guard.forget(source_id)
        for source_id in change.added:
            entry = new[source_id]
            self.controller.add_source(
                source_id,
                SourceKind(entry.kind),
                poll_log2=entry.poll_log2,
                poll_limits=(entry.poll_min, entry.poll_max),
            )
        for source_id, entry in new.items():
            self.guard.configure(source_id, min(entry.poll_log2, entry.poll_min))
        if server_workers is not None:
            for gone in self._server_workers - set(server_workers):
                if gone not in new:
                    self.guard.forget(gone)
            self._server_workers = frozenset(server_workers)
        if server_listens is not None:
            self._server_listens = frozenset(server_listens)
        for server_id in self._server_workers:
            # A server worker sends one ServerStats per listen address every 2 s at most.
            self.guard.configure(server_id, 0, max(1, len(self._server_listens)))
        self.servers = {key: counters for key, counters in self.servers.items()
                        if key[0] in self._server_workers and key[1] in self._server_listens}
        self.entries = list(entries)
        self._entries_by_id = new
        self._dirty = True

    def _drain_link(self, now: Now) -> None:
        if self.link is None:
            return
        for _ in range(MAX_LINK_FRAMES_PER_STEP):
            item = self.link.recv()
            if item is None:
                return
            message, fds = item
            try:
                if isinstance(message, LinkMessage):
                    self._link_message(message, fds, now)
                else:  # the link decodes only what it accepts; anything else is a bug
                    self.close_fds(fds)
            except PanicExit:
                raise
            except Exception as exc:  # contain it: the supervisor's next message may do
                self.limited.log(logging.ERROR, f"link-error:{type(exc).__name__}", now.mono_ns,
                                 "handling %s from the supervisor raised %s: %s",
                                 type(message).__name__, type(exc).__name__, exc)

    def _link_message(self, message: LinkMessage, fds: list[int], now: Now) -> None:
        match message:
            case LogControl():
                apply_log_control(message.level, message.timestamps, fds)
            case SourceSet():
                if self.on_slots is not None:
                    self.on_slots(message, fds)
                else:
                    self.close_fds(fds)
                self.set_sources(list(message.sources), now, message.server_workers,
                                 message.server_listens)
            case ProcessTable():
                self.set_processes(list(message.processes), now.mono_ns)
            case _:
                assert_never(message)

    @staticmethod
    def close_fds(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)

    def _drain_bus(self, now: Now) -> None:
        for _ in range(MAX_FRAMES_PER_STEP):
            item = self.bus.recv()
            if item is None:
                return
            peer, frame = item
            # The slot's worker id (SlotRouter), never a routing id the sender chose.
            sender = peer.decode(errors="replace")
            if not self.guard.admit(sender, now.mono_ns):
                continue
            try:
                message = decode(frame, BUS_TYPES)
            except MalformedMessage as exc:
                self.guard.drop(sender, exc.reason)
                self.limited.log(
                    logging.WARNING,
                    f"bad:{sender}",
                    now.mono_ns,
                    "dropped a malformed frame from %s: %s",
                    sender,
                    exc,
                )
                continue
            if not isinstance(message, BUS_MESSAGES):  # decode() accepted only BUS_TYPES
                self.guard.drop(sender, "unexpected-type")
                continue
            self.contained(sender, message, now)

    def contained(self, sender: str, message: BusMessage, now: Now) -> None:
        """`_handle` one message; whatever it raises drops that message, counted and logged."""
        try:
            self._handle(sender, message, now)
        except PanicExit:
            raise
        except Exception as exc:
            reason = f"error:{type(exc).__name__}"
            self.guard.drop(sender, reason)
            self.limited.log(logging.ERROR, f"{reason}:{sender}", now.mono_ns,
                             "dropped a %s from %s: handling it raised %s: %s",
                             type(message).__name__, sender, type(exc).__name__, exc)

    def _handle(self, sender: str, message: BusMessage, now: Now) -> None:
        match message:
            case ServerStats():
                if sender not in self._server_workers:
                    self.guard.drop(sender, "not-a-server")
                    return
                if message.listen not in self._server_listens:
                    self.guard.drop(sender, "unknown-listen")
                    return
                self.servers[(sender, message.listen)] = dict(message.counters)
            case SampleMsg() | SourceStatus() | Unreachable():
                if not self._from_its_source(sender, message, now):
                    return
            case _:
                assert_never(message)
        self.guard.accept(sender)

    def _from_its_source(self, sender: str, message: SampleMsg | SourceStatus | Unreachable,
                         now: Now) -> bool:
        """Handle a source's message; False (dropped and counted) if it is not the sender's."""
        entry = self._entries_by_id.get(sender)
        if entry is None:
            self.guard.drop(sender, "not-a-source")
            return False
        if message.source_id != sender:
            # A worker may only speak for the source it measures.
            self.guard.drop(sender, "wrong-source")
            return False
        if getattr(message, "kind", entry.kind) != entry.kind:
            self.guard.drop(sender, "wrong-kind")
            return False
        match message:
            case SampleMsg():
                # Instants come from this host's clocks: one in the future or older than the
                # source's previous sample is not a measurement (and would freeze the filter).
                if message.mono_ns > now.mono_ns + SAMPLE_FUTURE_SLACK_NS:
                    self.guard.drop(sender, "future")
                    return False
                if message.mono_ns < self._last_sample_mono.get(sender, 0):
                    self.guard.drop(sender, "stale")
                    return False
                if not entry.poll_min <= message.poll_log2 <= entry.poll_max:
                    # it sets when the algorithm next expects this source: configuration's call
                    self.guard.drop(sender, "poll-out-of-range")
                    return False
                self._last_sample_mono[sender] = message.mono_ns
                sample = self.backend.view_sample(message.to_sample())
                self._apply(self.controller.handle_sample(
                    sample, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns), now)
                if self.log.isEnabledFor(logging.DEBUG):
                    self._log_sample(sample)
            case SourceStatus():
                if not entry.poll_min <= message.poll_log2 <= entry.poll_max:
                    self.guard.drop(sender, "poll-out-of-range")
                    return False
                self.statuses[sender] = message
                if nts_pool_member(sender) is not None:
                    # which NTP server its key exchange named: a pool's server counts once
                    port = message.name.rpartition(":")[2]
                    self.controller.note_member_server(
                        sender, f"{message.resolved}:{port}" if message.resolved else None)
            case Unreachable():
                self._apply(self.controller.handle_unreachable(
                    sender, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns), now)
            case _:
                assert_never(message)
        return True

    def _log_sample(self, sample: Sample) -> None:
        """At log-level debug: each sample and what the source's filter made of it (the
        input to replay a run offline, and the wander the filter has settled on)."""
        src = self.controller.sources.get(sample.source_id)
        filt = src.filter if src is not None else None
        est = filt.estimate(sample.mono_ns) if filt is not None else None
        self.log.debug(
            "sample %s mono=%d offset=%.3e unc=%.3e delay=%.3e -> filter offset=%.3e "
            "freq=%.4e wander=%.3e common=%.3e",
            sample.source_id, sample.mono_ns, sample.offset_s, sample.uncertainty_s,
            sample.delay_s, est.offset if est else math.nan, est.freq if est else math.nan,
            math.sqrt(filt.wander) if filt else math.nan,
            math.sqrt(filt.common.extra_var) if filt else math.nan)

    def set_processes(self, processes: list[ProcessInfo], mono_ns: int) -> None:
        """The process table as of ``mono_ns`` (uptimes are brought up to date from it)."""
        self.processes = processes
        self._processes_mono_ns = mono_ns

    def _processes_now(self, now: Now) -> list[ProcessInfo]:
        """The supervisor's table (pushed every few seconds), uptimes brought up to now."""
        age = max(0.0, (now.mono_ns - self._processes_mono_ns) / 1e9)
        return [p if p.uptime_s is None else p.model_copy(update={"uptime_s": p.uptime_s + age})
                for p in self.processes]

    def server_totals(self) -> dict[str, dict[str, int]]:
        """Counters per listen address, summed over the server processes that serve it."""
        totals: dict[str, collections.Counter[str]] = {}
        for (_, listen), counters in sorted(self.servers.items()):
            totals.setdefault(listen, collections.Counter()).update(counters)
        return {listen: dict(c) for listen, c in list(totals.items())[:MAX_SERVER_ROWS]}

    def ipc_counts(self) -> dict[str, int]:
        """Bus drops by reason, plus the control requests refused or failed."""
        counts = self.guard.totals()
        counts.update(self.ctl_counts)
        return counts

    def _drain_control(self, now: Now) -> None:
        replies = 0
        for _ in range(MAX_CONTROL_FRAMES_PER_STEP):
            if replies >= MAX_REPLIES_PER_STEP:
                return  # the rest waits in the socket's queue until the next wake-up
            item = self.control.recv()
            if item is None:
                return
            peer, frame = item
            refused = self._ctl_admit(self._ctl_key(peer), now.mono_ns)
            if refused:
                self.ctl_counts[refused] += 1
                self.control.send(REFUSAL, peer)
                continue
            replies += 1
            self.control.send(self._control_reply(frame, now), peer)

    def _ctl_key(self, peer: bytes) -> bytes:
        """Whose bucket a request draws on: its sender's uid, else its connection's."""
        sender_uid = getattr(self.control, "sender_uid", None)
        uid = sender_uid() if sender_uid is not None else None
        return b"uid:%d" % uid if uid is not None else b"conn:" + peer

    def _ctl_admit(self, key: bytes, now_ns: int) -> str | None:
        """None if the request may be served, else the reason it is refused.

        A token from the peer's own bucket first and only then from the global one, so a
        peer refused by its own limit spends nothing of what the others share.
        """
        bucket = self._ctl_peers.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(CTL_PEER_RATE_PER_S, CTL_PEER_BURST)
            while len(self._ctl_peers) >= MAX_CTL_PEERS:
                self._ctl_peers.popitem(last=False)
        self._ctl_peers[key] = bucket  # most recently used last
        if not bucket.take(now_ns):
            return CTL_REFUSED
        return None if self._ctl_global.take(now_ns) else CTL_BUSY

    def _control_reply(self, frame: bytes, now: Now) -> bytes:
        try:
            request = decode(frame, {MsgType.CTL_REQUEST})
        except MalformedMessage as exc:
            return encode(CtlReply(ok=False, error=f"bad request: {exc}"))
        assert isinstance(request, CtlRequest)
        try:
            return encode(CtlReply(
                ok=True,
                clock=self._state(now),
                processes=self._processes_now(now),
                ipc=self.ipc_counts(),
                servers=self.server_totals(),
            ))
        except Exception as exc:  # a reply that fails its own schema must not stop us
            self.ctl_counts[CTL_FAILED] += 1
            self.limited.log(logging.ERROR, f"ctl-error:{type(exc).__name__}", now.mono_ns,
                             "could not build the status reply: %s: %s",
                             type(exc).__name__, exc)
            return encode(CtlReply(ok=False, error=f"clock-control could not build the reply: "
                                                   f"{type(exc).__name__}"))

    # -- outputs ----------------------------------------------------------------------------

    def _apply(self, actions: list[ClockAction], now: Now) -> None:
        for line in self.controller.take_messages():
            self.log.info("%s", line)
        for action in actions:
            if isinstance(action, AdvisePoll):
                self.bus.send(
                    encode(PollAdvice(source_id=action.source_id, poll_log2=action.poll_log2)),
                    action.source_id.encode(),
                )
                continue
            if isinstance(action, SeekAnotherServer):
                self.bus.send(encode(ServerAdvice(source_id=action.source_id,
                                                  reason=action.reason)),
                              action.source_id.encode())
                continue
            if isinstance(action, Panic):
                decision = on_panic(self.panic_action, bool(self.steering_stopped))
                if decision is PanicDecision.EXIT:
                    self.log.error("%s", action.message)
                    self.save(now, force=True)
                    raise PanicExit(action.message, action.exit_code)
                if decision is PanicDecision.STOP_STEERING:
                    self.log.error("%s; panic-action = stop-steering: the clock is no longer "
                                   "steered until ntpd-py is restarted", action.message)
                    self.steering_stopped = action.message
                    self.backend.apply(SetSynchronized(synchronized=False))
                    self._dirty = True
                continue
            if not steering_allowed(action, bool(self.steering_stopped)):
                continue
            if isinstance(action, Step):
                self.log.log(logging.WARNING if self.warn_on_jump else logging.INFO,
                             "stepping the clock by %+.6f s", action.offset_ns / 1e9)
            else:
                self.log.debug("clock action: %s", action)
            self.backend.apply(action)
            # a test's stand-in backend may not say: then no rewrites
            interval = getattr(self.backend, "refresh_interval_ns", None)
            if isinstance(action, SetFrequency) and interval:
                self._frequency = action
                self._next_refresh = now.mono_ns + interval
                self._refresh_until = now.mono_ns + FREQUENCY_REFRESH_WINDOW_NS
        if any(isinstance(a, Step | SetSynchronized) for a in actions):
            self._dirty = True  # publish at once: servers must not serve a stale state
        if actions:
            self.save(now)

    def _state(self, now: Now) -> ClockStateMsg:
        system = self.controller.system_snapshot(now_mono_ns=now.mono_ns)
        sources = self.controller.source_snapshots(now_mono_ns=now.mono_ns)
        state = build_clock_state(system, sources, self.entries, self.statuses, self.guard,
                                  self.backend.name, now.mono_ns, now.real_ns)
        if self.steering_stopped:
            view = state.system.model_copy(update={"steering_stopped": self.steering_stopped,
                                                   "synchronized": False})
            state = state.model_copy(update={"system": view})
        return state

    def _publish(self, now: Now) -> None:
        self.last_state = self._state(now)
        self._judge_pool_members(self.last_state)
        frame = encode(self.last_state)
        self.pub.send(frame)
        # Server workers get the state over their own slot, not the observers' feed.
        for peer in getattr(self.bus, "state_peers", list)():
            self.bus.send(frame, peer)
        self._next_publish = now.mono_ns + PUBLISH_INTERVAL_NS
        self._dirty = False

    def _judge_pool_members(self, state: ClockStateMsg) -> None:
        """Ask the supervisor to replace a pool member that stays a falseticker."""
        replace = self._falsetickers.judge((v.source_id, v.state) for v in state.sources)
        for source_id in replace:
            if self.link is None:
                continue
            self.log.warning("%s has been a falseticker for %d updates: replacing it",
                             source_id, self._falsetickers.replace_after)
            self.link.send(PeerFailed(worker_id=source_id, reason="falseticker"))

    def save(self, now: Now, force: bool = False) -> None:
        self._report_bounds()
        if self.store is None:
            return
        if force or self.store.quick_due(now.mono_ns):
            state = self.controller.export_state()
            export = getattr(self.backend, "export_state", None)
            if export is not None:
                state = dataclasses.replace(state, backend=export())
            self.store.save_quick(state.to_wire(), now.mono_ns, force)
        if self._drift_text is not None and (force or self.store.drift_due(now.mono_ns)):
            self.store.save_drift_text(
                self._drift_text(*self.controller.drift()), now.mono_ns, force
            )

    def _report_bounds(self) -> None:
        """Tell the supervisor what limits steps whenever it changed (it keeps the copy
        a restarted clock-control starts from); retried at the next save if not sent."""
        from ntpd_py.ipc.messages import SteeringBounds

        bounds = self.controller.step_bounds()
        if self.link is None or bounds == self._sent_bounds:
            return
        message = SteeringBounds(steps=bounds.steps, accumulated_steps_s=float(
            bounds.accumulated_s), startup_over=bounds.startup_over)
        if self.link.send(message):
            self._sent_bounds = bounds
