"""The PTP source worker: one unprivileged process per PHC (`[[source]] mode = "ptp"`).

A thin loop around :class:`ntpd_py.core.ptp_source.PtpSource`. The device fd
comes from the supervisor (opened read-only as root): inherited at start, and
on every later (re)open requested over the supervisor link and passed back
with SCM_RIGHTS — the worker itself never needs permission on `/dev/ptpN`.
With `clock = "simulated"` it reads a simulated PHC instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.ptp_events import (
    CloseDevice,
    DeviceErrorKind,
    DeviceFailed,
    DeviceOpened,
    OpenDevice,
    PtpSourceState,
    PtpStatus,
    Publish,
    ReadDevice,
    ReadingsRead,
    Report,
    SetTimer,
)
from ntpd_py.core.ptp_source import PtpSource
from ntpd_py.ipc.messages import (
    DeviceReply,
    DeviceRequest,
    Message,
    SampleMsg,
    SourceStateName,
    SourceStatus,
)
from ntpd_py.ipc.messages import Unreachable as UnreachableMsg
from ntpd_py.plumbing.logutil import RateLimitedLog
from ntpd_py.plumbing.scheduler import Now

from . import _phc
from .base import WorkerBase

__all__ = ["PtpTask"]

STATE_LOG_BURST = 4  # state changes logged at once per window (start-up, recovery)
REJECTING_STATUS_NS = 1_000_000_000  # status refresh while every poll is rejected

_STATE: dict[PtpSourceState, SourceStateName] = {
    PtpSourceState.STARTING: "starting",
    PtpSourceState.RUNNING: "running",
    PtpSourceState.REJECTING: "rejecting",
    PtpSourceState.WAITING: "waiting",
    PtpSourceState.UNREACHABLE: "unreachable",
    PtpSourceState.FAILED: "failed",
}


class PtpTask(WorkerBase):
    def __init__(
        self,
        *,
        source: PtpSourceConfig,
        worker_id: str,
        bus: Any,
        link: Any,
        log: logging.Logger,
        inherited_fd: int | None = None,
        sim_device: Any = None,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.config = source
        self.source = PtpSource(source, worker_id)
        self.device: Any = None
        self._inherited_fd = inherited_fd
        self._sim_device = sim_device
        self._awaiting_fd = False
        self._last_report: tuple[str, str] | None = None
        self.state_log = RateLimitedLog(log, burst=STATE_LOG_BURST)
        # rejected polls: the first report at once, then at most once a minute with a count
        self.reject_log = RateLimitedLog(log)
        self._rejected_polls = 0  # errors counted when the rejection was last logged
        self._rejecting_status_ns = 0  # when the count of rejected polls was last sent
        self._started = False

    def close(self) -> None:
        if self.device is not None:
            self.device.close()

    def pollables(self) -> Sequence[Any]:
        return self.base_pollables()

    def next_deadline_ns(self) -> int | None:
        deadline = self.source.deadline_ns
        base = self.base_deadline()
        if not self._started:
            return 0
        return base if deadline is None else min(base, deadline)

    def step(self, now: Now) -> None:
        self.drain_link(self._on_link)
        self.drain_bus(set(), lambda message: None, now)
        if not self._started:
            self._started = True
            self._run(self.source.start(now.mono_ns), now)
        elif (
            self.source.deadline_ns is not None
            and now.mono_ns >= self.source.deadline_ns
            and not self._awaiting_fd
        ):
            self._run(self.source.handle_timer(now.mono_ns), now)
        self._log_rejections(now)
        self.housekeeping(now, self._status)
        self.state_log.flush(now.mono_ns)
        self.reject_log.flush(now.mono_ns)

    # -- carrying out actions -----------------------------------------------------------

    def _run(self, actions: list[Any], now: Now) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, OpenDevice):
                event = self._open()
                if event is None:
                    return  # the fd will come from the supervisor
                pending += self.source.handle_event(event, self._mono())
            elif isinstance(action, ReadDevice) and self._sim_device is not None:
                event = self._sim_read(action)
                pending += self.source.handle_event(event, self._mono())
                continue
            elif isinstance(action, ReadDevice | CloseDevice):
                self.device, event = _phc.execute(self.device, self.config.path, action)
                if event is not None:
                    pending += self.source.handle_event(event, self._mono())
            elif isinstance(action, Publish):
                self.send(SampleMsg.from_sample(action.sample))
            elif isinstance(action, Report):
                self._report(action.status, now)
            elif isinstance(action, SetTimer):
                pass  # source.deadline_ns holds it

    def _sim_read(self, action: ReadDevice) -> Any:
        # As _phc.execute, but the realtime twin comes from the simulated clock the
        # readings' system stamps are on.
        try:
            readings = self._sim_device.read(action.method, action.count)
        except _phc.PhcError as exc:
            return exc.event()
        mono = self._mono()
        return ReadingsRead(action.method, tuple(readings), mono, self._sim_device.local_ns(mono))

    @staticmethod
    def _mono() -> int:
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def _open(self) -> Any:
        if self._sim_device is not None:
            self.device = self._sim_device
            return DeviceOpened(self.device.caps(), self.config.path, None, "simulated")
        if self._inherited_fd is not None:
            fd, self._inherited_fd = self._inherited_fd, None
            self.device, event = _phc.adopt(self.config.path, fd)
            return event
        if self.link is None or self.link_closed:
            self.device, event = _phc.adopt(self.config.path)  # single-process: we are root
            return event
        self.link.send(DeviceRequest(worker_id=self.worker_id))
        self._awaiting_fd = True
        return None

    def _on_link(self, message: Message, fds: list[int]) -> None:
        if not isinstance(message, DeviceReply) or not self._awaiting_fd:
            self.close_fds(fds)
            return
        self._awaiting_fd = False
        if message.ok and fds:
            self.device, event = _phc.adopt(self.config.path, fds[0])
            self.close_fds(fds[1:])
        else:
            self.close_fds(fds)
            event = DeviceFailed(_kind_for_errno(message.errno), message.message, message.errno)
        self._run(self.source.handle_event(event, self._mono()), Now(self._mono(), 0))

    def _log_rejections(self, now: Now) -> None:
        # Once per rejected poll while REJECTING (the core reports only the entry, so the
        # count of polls in a row reaches the log through here), rate-limited per minute.
        if self.source.state is not PtpSourceState.REJECTING:
            return
        status = self.source.status()
        rejected = sum(status.errors.values())
        if rejected != self._rejected_polls:
            self._rejected_polls = rejected
            self.reject_log.log(logging.WARNING, "rejecting", now.mono_ns,
                                "rejecting every poll: %s", status.message)
            # the count in `ntpctl status` follows within a second, not the 10 s status period
            if now.mono_ns - self._rejecting_status_ns >= REJECTING_STATUS_NS:
                self._rejecting_status_ns = now.mono_ns
                self.status_now()

    def _report(self, status: PtpStatus, now: Now) -> None:
        key = (status.state.value, status.message)
        if key != self._last_report:
            level = logging.INFO if status.state is PtpSourceState.RUNNING else logging.WARNING
            # One key for every state: a flapping device logs a few changes, then once
            # per window, and the state it ends in is logged when the window allows.
            # REJECTING is logged by _log_rejections, with its own limit.
            if status.state is not PtpSourceState.REJECTING:
                self.state_log.log(
                    level, "state", now.mono_ns, "%s: %s",
                    status.state.value, status.message,
                )
            if status.state is PtpSourceState.UNREACHABLE:
                self.send(UnreachableMsg(source_id=self.worker_id, reason=status.message))
            self._last_report = key
            self.status_now()

    def _status(self) -> SourceStatus:
        status = self.source.status()
        counters = {
            "polls": status.polls,
            "readings": status.readings,
            "samples": status.samples,
            "readings_per_sample": status.readings_per_sample,
        }
        counters.update({f"error:{k}": int(v) for k, v in list(status.errors.items())[:40]})
        if self.bus_dropped:
            counters["bus_dropped"] = self.bus_dropped
        detail = "" if status.state is PtpSourceState.RUNNING else status.message
        if status.clock_name and status.state is PtpSourceState.RUNNING:
            detail = f"clock {status.clock_name}"
        return SourceStatus(
            source_id=self.worker_id,
            kind="ptp",
            name=self.config.path,
            resolved=status.resolved_path,
            state=_STATE[status.state],
            detail=detail,
            method=status.method.value if status.method else None,
            last_window_s=None if status.last_window_ns is None else status.last_window_ns / 1e9,
            poll_log2=status.poll_log2,
            counters=counters,
        )


def _kind_for_errno(err: int) -> DeviceErrorKind:
    import errno

    return {
        errno.ENOENT: DeviceErrorKind.MISSING,
        errno.EACCES: DeviceErrorKind.PERMISSION,
        errno.EPERM: DeviceErrorKind.PERMISSION,
        errno.ENODEV: DeviceErrorKind.VANISHED,
        errno.ENXIO: DeviceErrorKind.VANISHED,
        errno.ENOTTY: DeviceErrorKind.NOT_PTP,
    }.get(err, DeviceErrorKind.IO)
