"""The clock-control loop: samples in, clock actions out, state published.

Thin around :class:`ntpd_py.core.controller.ClockController`: it admits and
decodes frames from the bus, feeds the algorithm, carries out the actions on
the clock backend, publishes the clock state, answers `ntpctl`, and keeps the
restart snapshot and the drift file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from ntpd_py.core.actions import AdvisePoll, ClockAction, Panic, SetSynchronized, Step
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import SourceKind
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
    ServerStats,
    SourceEntry,
    SourceSet,
    SourceStatus,
    Unreachable,
)

from .base import RIDE_ALONG_NS
from .bus_guard import BusGuard
from .clock_backends import ClockBackend
from .logutil import RateLimitedLog, apply_log_control
from .runtime import Now
from .state_store import StateStore
from .status_view import build_clock_state, summary_line

__all__ = ["ClockControlTask", "PanicExit"]

BUS_TYPES = {MsgType.SAMPLE, MsgType.SOURCE_STATUS, MsgType.UNREACHABLE, MsgType.SERVER_STATS}
PUBLISH_INTERVAL_NS = 1_000_000_000
# The state feed goes out with a sample that arrives within 0.3 s before or 0.25 s
# after its due time, instead of waking clock-control by itself: PHC samples come
# every second, just before or just after it. (Less than half the interval early,
# so two PHCs polled half a second apart do not double the rate.)
PUBLISH_RIDE_ALONG_NS = 300_000_000
PUBLISH_LATE_NS = 250_000_000
MAX_FRAMES_PER_STEP = 2000
FALSETICKER_REPLACE_AFTER = 60  # publishes (about a minute)


class PanicExit(Exception):
    """The algorithm refused a step beyond a panic threshold; exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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
        self.servers: dict[str, ServerStats] = {}
        self.processes: list[ProcessInfo] = []
        self._processes_mono_ns = 0
        self.last_state: ClockStateMsg | None = None
        self._drift_text = drift_text
        self._next_publish = 0
        self._next_heartbeat = 0
        self._dirty = True
        self._falseticker_streak: dict[str, int] = {}
        self.panic_action = "exit"
        self.steering_stopped = ""
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
        deadlines = [
            self._next_publish + PUBLISH_LATE_NS,
            self._next_heartbeat if self.link else None,
            self.controller.next_timer_mono_ns(),
        ]
        return min(d for d in deadlines if d is not None)

    def step(self, now: Now) -> None:
        self.limited.flush(now.mono_ns)
        self._drain_link(now)
        self._drain_bus(now)
        timer = self.controller.next_timer_mono_ns()
        if timer is not None and timer <= now.mono_ns:
            self._apply(
                self.controller.handle_timer(now_mono_ns=now.mono_ns, now_real_ns=now.real_ns), now
            )
        self._drain_control(now)
        if self._dirty or now.mono_ns + PUBLISH_RIDE_ALONG_NS >= self._next_publish:
            self._publish(now)
        if self.link is not None and now.mono_ns + RIDE_ALONG_NS >= self._next_heartbeat:
            summary = summary_line(self.last_state) if self.last_state else ""
            self.link.send(Heartbeat(worker_id=self.name, mono_ns=now.mono_ns, status=summary))
            self._next_heartbeat = now.mono_ns + HEARTBEAT_INTERVAL_NS

    # -- inputs ----------------------------------------------------------------------------

    def set_sources(self, entries: list[SourceEntry], now: Now) -> None:
        old = {e.source_id: e for e in self.entries}
        new = {e.source_id: e for e in entries}
        for source_id, entry in old.items():
            if new.get(source_id) != entry:  # gone, or its settings changed: start afresh
                self.controller.remove_source(source_id)
                self.statuses.pop(source_id, None)
                if source_id not in new:
                    self.guard.forget(source_id)
        for source_id, entry in new.items():
            if old.get(source_id) != entry:
                self.controller.add_source(
                    source_id,
                    SourceKind(entry.kind),
                    poll_log2=entry.poll_log2,
                    poll_limits=(entry.poll_min, entry.poll_max),
                )
            self.guard.configure(source_id, min(entry.poll_log2, entry.poll_min))
        for server_id in ["server", *(f"server#{i}" for i in range(1, 33))]:
            self.guard.configure(server_id, 0)
        self.entries = list(entries)
        self._dirty = True

    def _drain_link(self, now: Now) -> None:
        if self.link is None:
            return
        while (item := self.link.recv()) is not None:
            message, fds = item
            if isinstance(message, LogControl):
                apply_log_control(message.level, message.timestamps, fds)
            elif isinstance(message, SourceSet):
                if self.on_slots is not None:
                    self.on_slots(message, fds)
                else:
                    self.close_fds(fds)
                self.set_sources(list(message.sources), now)
            elif isinstance(message, ProcessTable):
                self.processes = list(message.processes)
                self._processes_mono_ns = now.mono_ns

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
            servers = getattr(self.bus, "state_peers", None)
            if isinstance(message, ServerStats) and servers is not None \
                    and peer not in servers():
                self.guard.drop(sender, "wrong-source")  # only a server slot has counters
                continue
            self._handle(sender, message, now)

    def _handle(self, sender: str, message: Any, now: Now) -> None:
        source_id = getattr(message, "source_id", None)
        if isinstance(message, ServerStats):
            self.servers[message.listen] = message
        elif source_id != sender:
            # A worker may only speak for the source it measures.
            self.guard.drop(sender, "wrong-source")
            return
        elif isinstance(message, SampleMsg):
            sample = self.backend.view_sample(message.to_sample())
            self._apply(
                self.controller.handle_sample(
                    sample, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns
                ),
                now,
            )
        elif isinstance(message, SourceStatus):
            self.statuses[sender] = message
            self.guard.configure(sender, message.poll_log2)
        elif isinstance(message, Unreachable):
            self._apply(
                self.controller.handle_unreachable(
                    sender, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns
                ),
                now,
            )
        self.guard.accept(sender)

    def _processes_now(self, now: Now) -> list[ProcessInfo]:
        """The supervisor's table (pushed every few seconds), uptimes brought up to now."""
        age = max(0.0, (now.mono_ns - self._processes_mono_ns) / 1e9)
        return [p if p.uptime_s is None else p.model_copy(update={"uptime_s": p.uptime_s + age})
                for p in self.processes]

    def _drain_control(self, now: Now) -> None:
        while (item := self.control.recv()) is not None:
            peer, frame = item
            try:
                request = decode(frame, {MsgType.CTL_REQUEST})
            except MalformedMessage as exc:
                reply = CtlReply(ok=False, error=f"bad request: {exc}")
            else:
                assert isinstance(request, CtlRequest)
                reply = CtlReply(
                    ok=True,
                    clock=self._state(now),
                    processes=self._processes_now(now),
                    ipc=self.guard.totals(),
                    servers={k: dict(v.counters) for k, v in self.servers.items()},
                )
            self.control.send(encode(reply), peer)

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
            if isinstance(action, Panic):
                if self.panic_action == "exit":
                    self.log.error("%s", action.message)
                    self.save(now, force=True)
                    raise PanicExit(action.message, action.exit_code)
                if not self.steering_stopped:
                    self.log.error("%s; panic-action = stop-steering: the clock is no longer "
                                   "steered until ntpd-py is restarted", action.message)
                    self.steering_stopped = action.message
                    self.backend.apply(SetSynchronized(synchronized=False))
                    self._dirty = True
                continue
            if self.steering_stopped:
                continue
            self.log.debug("clock action: %s", action)
            self.backend.apply(action)
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
        for view in state.sources:
            if not view.source_id.startswith("pool:"):
                continue
            streak = self._falseticker_streak.get(view.source_id, 0)
            streak = streak + 1 if view.state == "x" else 0
            self._falseticker_streak[view.source_id] = streak
            if streak == FALSETICKER_REPLACE_AFTER and self.link is not None:
                self.log.warning("%s has been a falseticker for %d updates: replacing it",
                                 view.source_id, streak)
                self.link.send(PeerFailed(worker_id=view.source_id, reason="falseticker"))

    def save(self, now: Now, force: bool = False) -> None:
        if self.store is None:
            return
        if force or self.store.quick_due(now.mono_ns):
            state = dict(self.controller.export_state())
            export = getattr(self.backend, "export_state", None)
            if export is not None:
                state["_backend"] = export()
            self.store.save_quick(state, now.mono_ns, force)
        if self._drift_text is not None and (force or self.store.drift_due(now.mono_ns)):
            self.store.save_drift_text(
                self._drift_text(*self.controller.drift()), now.mono_ns, force
            )
