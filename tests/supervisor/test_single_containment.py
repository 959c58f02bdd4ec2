"""--single-process: a worker loop that raises is contained; clock-control goes on.

Regression (issue #17, 3c): a sample failing SampleMsg validation (a negative
mono_ns) raised pydantic's ValidationError out of the worker's step, through the
one scheduler, and ended the whole single-process daemon with a traceback.
"""

from __future__ import annotations

import logging
import time

from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.ipc.framing import encode
from ntpd_py.ipc.messages import SampleMsg, SourceEntry
from ntpd_py.plumbing.logutil import RateLimitedLog
from ntpd_py.plumbing.scheduler import Now, SystemClockReader, run_poll
from ntpd_py.supervisor.single import _Contained
from ntpd_py.workers.clock_backends import ObserveClock
from ntpd_py.workers.clock_control import ClockControlTask

PTP = "ptp:/dev/ptp0"


class _Worker:
    """A PTP-like worker loop: one sample per step, the second one with mono_ns < 0."""

    name = "ptp"
    worker_id = PTP

    def __init__(self, bus) -> None:
        self.bus, self.steps, self.next = bus, 0, 0

    def pollables(self) -> list:
        return []

    def next_deadline_ns(self) -> int:
        return self.next

    def step(self, now: Now) -> None:
        self.steps += 1
        mono = -5 if self.steps == 2 else now.mono_ns
        sample = Sample(source_id=PTP, kind=SourceKind.PTP, offset_s=1e-6, delay_s=1e-7,
                        uncertainty_s=1e-7, root_delay_s=0.0, root_dispersion_s=0.0, stratum=1,
                        leap=LeapIndicator.NONE, reference_id=1, mono_ns=mono,
                        realtime_ns=now.real_ns, poll_log2=0)
        self.bus.send(encode(SampleMsg.from_sample(sample)))  # raises on the second step
        self.next = now.mono_ns + 50_000_000


def test_a_worker_raising_validation_error_does_not_end_single_process() -> None:
    hub = MemoryHub()
    clock = SystemClockReader()
    now = clock.now()
    cc = ClockControlTask(
        controller=ClockController(SynchronizationConfig(minimum_agreeing_sources=1),
                                   now_mono_ns=now.mono_ns, now_real_ns=now.real_ns),
        backend=ObserveClock(), bus=hub.router("bus"), pub=hub.pub("state"),
        control=hub.router("control"), link=None, store=None, log=logging.getLogger("cc"))
    cc.set_sources([SourceEntry(source_id=PTP, kind="ptp", name="/dev/ptp0", poll_log2=0,
                                poll_min=0, poll_max=0)], now)
    worker = _Worker(hub.dealer("bus", PTP.encode()))
    limited = RateLimitedLog(logging.getLogger("single"))
    deadline = time.monotonic() + 1.6
    run_poll([_Contained(t, cc, limited) for t in (cc, worker)], clock,
             lambda: time.monotonic() > deadline)
    # the failure was counted under the worker, the worker was held back about a second,
    # then it and clock-control went on
    assert cc.guard.stats[PTP].dropped == {"error:ValidationError": 1}
    assert worker.steps >= 4
    # (the last one may still wait in the queue when the loop stops)
    assert worker.steps - 2 <= cc.guard.stats[PTP].accepted <= worker.steps - 1
