"""The sock source worker: one unprivileged process per `[[source]] mode = "sock"`.

A thin loop around :class:`ntpd_py.core.sock_source.SockSource`: the
supervisor created and bound the feeder's Unix datagram socket (as gpsd
expects it at `path`) and hands its fd over, so this process only receives on
it (its system-call profile has no bind). :class:`SockReceiver` reads a bounded
number of datagrams per wake-up; accepted samples go to clock-control on the
bus like PTP samples, and what the source drops is counted per reason in the
status counters (``drop:<reason>``; ``overflow`` for datagrams thrown away
unread in a flood).

The receive instants are the host's CLOCK_MONOTONIC and CLOCK_REALTIME, as the
feeder's stamps are; with ``clock = "simulated"`` each accepted sample is moved
onto the simulated clock (through its CLOCK_MONOTONIC instant) before it is
published, as the NTP worker does with its timestamps.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config import SockSourceConfig
from ntpd_py.core.events import on_local_clock
from ntpd_py.core.refclock_events import Publish, Report, SetTimer, SockAction
from ntpd_py.core.sock_source import SockSource, SockState
from ntpd_py.ipc.messages import Message, SampleMsg, SourceStateName, SourceStatus
from ntpd_py.ipc.messages import Unreachable as UnreachableMsg
from ntpd_py.plumbing.logutil import RateLimitedLog
from ntpd_py.plumbing.scheduler import Now

from .base import WorkerBase
from .refclock_io import SockReceiver

__all__ = ["SockTask"]

STATE_LOG_BURST = 4

# SILENT has no name of its own on the wire: a feeder that stopped is unreachable.
_STATE: dict[SockState, SourceStateName] = {
    SockState.WAITING: "waiting",
    SockState.RUNNING: "running",
    SockState.REJECTING: "rejecting",
    SockState.SILENT: "unreachable",
}


class SockTask(WorkerBase):
    def __init__(
        self,
        *,
        source: SockSourceConfig,
        worker_id: str,
        bus: Any,
        link: Any,
        log: logging.Logger,
        sock: socket.socket,
        sim: Any = None,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.sim = sim
        self.config = source
        self.source = SockSource(source, worker_id)
        self.sock = sock
        sock.setblocking(False)
        self.receiver = SockReceiver(sock, self.source)
        self.state_log = RateLimitedLog(log, burst=STATE_LOG_BURST)
        self._started = False

    def close(self) -> None:
        self.sock.close()

    def pollables(self) -> Sequence[Any]:
        return [*self.base_pollables(), self.sock.fileno()]

    def next_deadline_ns(self) -> int | None:
        if not self._started:
            return 0
        deadline = self.source.deadline_ns
        base = self.base_deadline()
        return base if deadline is None else min(base, deadline)

    def step(self, now: Now) -> None:
        self.drain_link(self._on_link)
        self.drain_bus(set(), lambda message: None, now)
        if not self._started:
            self._started = True
            self._run(self.source.start(now.mono_ns), now)
        # Non-blocking and bounded: reading when nothing is queued costs one EAGAIN.
        self._run(self.receiver.on_readable(), now)
        deadline = self.source.deadline_ns
        if deadline is not None and now.mono_ns >= deadline:
            self._run(self.source.handle_timer(now.mono_ns), now)
        self.housekeeping(now, self._status)
        self.state_log.flush(now.mono_ns)

    def _on_link(self, message: Message, fds: list[int]) -> None:
        self.close_fds(fds)  # nothing is asked of the supervisor

    def _run(self, actions: list[SockAction], now: Now) -> None:
        for action in actions:
            if isinstance(action, Publish):
                sample = action.sample
                if self.sim is not None:
                    sample = on_local_clock(sample, self.sim.local_ns(sample.mono_ns))
                self.send(SampleMsg.from_sample(sample))
            elif isinstance(action, Report):
                status = action.status
                level = logging.INFO if status.state == SockState.RUNNING else logging.WARNING
                self.state_log.log(level, "state", now.mono_ns, "%s: %s", status.state,
                                   status.message)
                if status.state == SockState.SILENT:
                    self.send(UnreachableMsg(source_id=self.worker_id, reason=status.message))
                self.status_now()
            elif isinstance(action, SetTimer):
                pass  # source.deadline_ns holds it

    def _status(self) -> SourceStatus:
        status = self.source.status()
        counters = {"samples": status.samples}
        counters.update({f"drop:{k}": v for k, v in list(status.drops.items())[:40]})
        if self.receiver.overflow:
            counters["overflow"] = self.receiver.overflow
        if self.bus_dropped:
            counters["bus_dropped"] = self.bus_dropped
        return SourceStatus(
            source_id=self.worker_id,
            kind="sock",
            name=self.config.path,
            state=_STATE[self.source.state],
            detail=status.message,
            poll_log2=self.source.poll_log2,
            counters=counters,
        )
