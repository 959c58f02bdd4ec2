"""The PPS source worker: one unprivileged process per `[[source]] mode = "pps"` (/dev/ppsN).

A thin loop around :class:`ntpd_py.core.pps_source.PpsSource`. The device fd
comes from the supervisor, which opened it as root and set the capture edge
(PPS_SETPARAMS needs CAP_SYS_TIME); it keeps the fd for the daemon's life and
hands it to every start of this worker. PPS_GETCAP is answered at once; a
FetchPulse is carried out as polls (workers/refclock_io.PpsPoller), so the
loop never sits in a blocking ioctl.

A pulse says where a second starts, not which second: clock-control sends its
published state over this worker's slot (as to the server worker), and the
best selected or combined non-PPS source in it gives the whole seconds
(core/pps_source.whole_seconds_from). Without one the status says "waiting for
a source with whole seconds" and nothing is published.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config import PpsSourceConfig
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.pps_abi import PPS_CAPTUREASSERT, PPS_CAPTURECLEAR
from ntpd_py.core.pps_source import PpsSource, PpsState, WholeSeconds, whole_seconds_from
from ntpd_py.core.refclock_events import (
    CheckDevice,
    FetchPulse,
    PpsAction,
    PpsEvent,
    Publish,
    PulseFetched,
    Report,
    SetTimer,
    pulse_on_local_clock,
)
from ntpd_py.core.snapshots import SelectionState, SourceSnapshot
from ntpd_py.ipc.framing import MalformedMessage, decode
from ntpd_py.ipc.messages import (
    ClockStateMsg,
    MsgType,
    SampleMsg,
    SourceStateName,
    SourceStatus,
    SourceView,
)
from ntpd_py.ipc.messages import Unreachable as UnreachableMsg
from ntpd_py.plumbing.logutil import RateLimitedLog
from ntpd_py.plumbing.scheduler import Now

from .base import WorkerBase
from .refclock_io import PpsDevice, PpsPoller

__all__ = ["PpsTask", "whole_seconds_in"]

STATE_LOG_BURST = 4
STATE_MAX_FRAME = 1 << 20  # clock-control's published state: every source's view

_STATE: dict[PpsState, SourceStateName] = {
    PpsState.CHECKING: "starting",
    PpsState.NO_SIGNAL: "waiting",
    PpsState.WAITING_FOR_SECONDS: "waiting",
    PpsState.RUNNING: "running",
    PpsState.UNREACHABLE: "unreachable",
    PpsState.FAILED: "failed",
}


def whole_seconds_in(sources: Sequence[SourceView]) -> WholeSeconds | None:
    """The whole-seconds estimate clock-control's published source views allow (None: none)."""
    snapshots = []
    for view in sources:
        if view.offset_s is None or view.uncertainty_s is None or view.state not in (
                SelectionState.SELECTED.value, SelectionState.COMBINED.value):
            continue
        snapshots.append(SourceSnapshot(
            source_id=view.source_id, kind=SourceKind(view.kind),
            state=SelectionState(view.state), offset_s=view.offset_s,
            uncertainty_s=view.uncertainty_s, delay_s=view.delay_s or 0.0,
            last_offset_s=view.last_offset_s if view.last_offset_s is not None else math.nan,
            frequency=0.0, poll_log2=view.poll_log2, reach=view.reach, samples=view.samples,
            last_sample_mono_ns=None, stratum=view.stratum, reference_id=view.reference_id,
            root_delay_s=view.root_delay_s or 0.0,
            root_dispersion_s=view.root_dispersion_s or 0.0, leap=LeapIndicator.NONE))
    return whole_seconds_from(snapshots)


class PpsTask(WorkerBase):
    def __init__(
        self,
        *,
        source: PpsSourceConfig,
        worker_id: str,
        bus: Any,
        link: Any,
        log: logging.Logger,
        device: PpsDevice | None,
        sim: Any = None,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.config = source
        # clock = "simulated": the kernel stamps pulses with the host's clock; they are
        # moved onto the simulated clock before pairing (the whole seconds are in its frame)
        self.sim = sim
        self.source = PpsSource(source, worker_id)
        self.device = device
        self.poller = PpsPoller(device, self.source.period_ns) if device is not None else None
        self.state_log = RateLimitedLog(log, burst=STATE_LOG_BURST)
        self.capture_note = ""  # why the configured edge is not captured, when we know
        self._started = False

    def close(self) -> None:
        if self.device is not None:
            os.close(self.device.fd)

    def pollables(self) -> Sequence[Any]:
        return self.base_pollables()

    def next_deadline_ns(self) -> int | None:
        if not self._started:
            return 0
        deadlines = [self.base_deadline()]
        poll = None if self.poller is None else self.poller.next_poll_ns
        for deadline in (self.source.deadline_ns, poll):
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines)

    def step(self, now: Now) -> None:
        self.drain_link(lambda message, fds: self.close_fds(fds))
        self._drain_state()
        if not self._started:
            self._started = True
            if self.device is not None:
                self._run(self.source.start(now.mono_ns), now)
            else:
                self.status_now()
        if (self.poller is not None and self.poller.next_poll_ns is not None
                and now.mono_ns >= self.poller.next_poll_ns):
            event = self.poller.poll(now.mono_ns)
            if event is not None:
                self._answer(event, now)
        deadline = self.source.deadline_ns
        if deadline is not None and now.mono_ns >= deadline:
            self._run(self.source.handle_timer(now.mono_ns), now)
        self.housekeeping(now, self._status)
        self.state_log.flush(now.mono_ns)

    def _drain_state(self) -> None:
        latest: bytes | None = None
        while (item := self.bus.recv()) is not None:
            latest = item[1]  # only the newest state matters
        if latest is None:
            return
        try:
            message = decode(latest, {MsgType.CLOCK_STATE}, max_size=STATE_MAX_FRAME)
        except MalformedMessage:
            self.bus_malformed += 1
            return
        assert isinstance(message, ClockStateMsg)
        self.source.update_whole_seconds(whole_seconds_in(message.sources))

    def _answer(self, event: PpsEvent, now: Now) -> None:
        self._run(self.source.handle_event(self._framed(event), now.mono_ns), now)

    def _framed(self, event: PpsEvent) -> PpsEvent:
        if self.sim is not None and isinstance(event, PulseFetched):
            return pulse_on_local_clock(event, self.sim.local_ns)
        return event

    def _run(self, actions: list[PpsAction], now: Now) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, CheckDevice):
                assert self.device is not None  # the source is started only with one
                self._note_capture()
                pending += self.source.handle_event(self.device.execute(action), now.mono_ns)
            elif isinstance(action, FetchPulse):
                assert self.poller is not None
                event = self.poller.begin(action, now.mono_ns)
                if event is not None:
                    pending += self.source.handle_event(self._framed(event), now.mono_ns)
            elif isinstance(action, Publish):
                self.send(SampleMsg.from_sample(action.sample))
            elif isinstance(action, Report):
                status = action.status
                level = logging.INFO if status.state == PpsState.RUNNING else logging.WARNING
                self.state_log.log(level, "state", now.mono_ns, "%s: %s%s", status.state,
                                   status.message, self._capture_suffix(status.state))
                if status.state in (PpsState.UNREACHABLE, PpsState.FAILED):
                    self.send(UnreachableMsg(source_id=self.worker_id, reason=status.message))
                self.status_now()
            elif isinstance(action, SetTimer):
                pass  # source.deadline_ns holds it

    def _note_capture(self) -> None:
        # The device can capture the edge but is not set to: the supervisor's
        # PPS_SETPARAMS failed (it needs CAP_SYS_TIME). Said in the status.
        bit = PPS_CAPTUREASSERT if self.config.edge == "assert" else PPS_CAPTURECLEAR
        assert self.device is not None
        try:
            can = self.device.getcap() & bit
            captured = self.device.getparams().mode & bit
        except (OSError, ValueError):
            return  # the check itself reports the device's failure
        self.capture_note = "" if captured or not can else (
            f"{self.config.path} is not set to capture the {self.config.edge} edge: "
            "setting it (PPS_SETPARAMS) needs CAP_SYS_TIME, which the supervisor did not have")

    def _capture_suffix(self, state: str) -> str:
        return f" ({self.capture_note})" if self.capture_note and state == PpsState.FAILED else ""

    def _status(self) -> SourceStatus:
        status = self.source.status()
        counters = {"samples": status.samples}
        counters.update({f"drop:{k}": v for k, v in list(status.drops.items())[:40]})
        if self.bus_dropped:
            counters["bus_dropped"] = self.bus_dropped
        state, detail = _STATE[self.source.state], status.message
        if self.device is None:
            state, detail = "failed", (f"{self.config.path} could not be opened by the "
                                       "supervisor (its log says why)")
        return SourceStatus(
            source_id=self.worker_id,
            kind="pps",
            name=self.config.path,
            state=state,
            detail=detail + self._capture_suffix(status.state),
            poll_log2=self.source.status_poll_log2,
            counters=counters,
        )
