"""Clock-control's loop over in-memory channels: admission, drops, counting, answers."""

from __future__ import annotations

import logging
import time

import msgpack
from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.ipc.framing import decode, encode
from ntpd_py.ipc.messages import CtlReply, CtlRequest, SampleMsg, SourceEntry
from ntpd_py.workers.clock_backends import ObserveClock
from ntpd_py.workers.clock_control import ClockControlTask
from ntpd_py.workers.runtime import Now

PTP = "ptp:/dev/ptp0"
NTP = "ntp:127.0.0.1:123"


def _now() -> Now:
    return Now(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns())


def _sample(source_id: str, kind: SourceKind, now: Now) -> SampleMsg:
    return SampleMsg.from_sample(Sample(
        source_id=source_id, kind=kind, offset_s=1e-6, delay_s=5e-7, uncertainty_s=1e-7,
        root_delay_s=0.0, root_dispersion_s=0.0, stratum=1, leap=LeapIndicator.NONE,
        reference_id=1, mono_ns=now.mono_ns, realtime_ns=now.real_ns, poll_log2=0))


def _task():
    hub = MemoryHub()
    now = _now()
    sync = SynchronizationConfig(minimum_agreeing_sources=1)
    task = ClockControlTask(
        controller=ClockController(sync, now_mono_ns=now.mono_ns, now_real_ns=now.real_ns),
        backend=ObserveClock(), bus=hub.router("bus"), pub=hub.pub("state"),
        control=hub.router("control"), link=None, store=None, log=logging.getLogger("t"))
    task.set_sources([
        SourceEntry(source_id=PTP, kind="ptp", name="/dev/ptp0", poll_log2=0, poll_min=0,
                    poll_max=0),
        SourceEntry(source_id=NTP, kind="ntp", name="127.0.0.1", poll_log2=4, poll_min=4,
                    poll_max=6),
    ], now)
    return hub, task


def _status(hub: MemoryHub, task: ClockControlTask) -> CtlReply:
    ctl = hub.dealer("control", b"ntpctl")
    ctl.send(encode(CtlRequest(command="status")))
    task.step(_now())
    reply = decode(ctl.recv()[1], max_size=1 << 20)
    assert isinstance(reply, CtlReply)
    return reply


def test_malformed_frames_from_a_worker_are_dropped_and_counted() -> None:
    hub, task = _task()
    ptp = hub.dealer("bus", PTP.encode())
    now = _now()
    for frame in (b"garbage", b"x" * 100_000, msgpack.packb([99, 1, {}]),
                  msgpack.packb([1, 1, {"source_id": PTP}])):
        ptp.send(frame)
    task.step(now)
    dropped = task.guard.stats[PTP].dropped
    assert dropped == {"undecodable": 1, "oversized": 1, "wrong-version": 1, "invalid": 1}
    reply = _status(hub, task)
    (view,) = [s for s in reply.clock.sources if s.source_id == PTP]
    assert view.ipc_dropped == 4
    assert reply.ipc == {"undecodable": 1, "oversized": 1, "wrong-version": 1, "invalid": 1}


def test_a_worker_cannot_speak_for_another_source() -> None:
    hub, task = _task()
    hub.dealer("bus", NTP.encode()).send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.stats[NTP].dropped == {"wrong-source": 1}
    assert task.controller.source_snapshots(now_mono_ns=_now().mono_ns)[0].samples == 0


def test_a_flooding_source_is_throttled_and_the_other_is_served() -> None:
    hub, task = _task()
    ptp, ntp = hub.dealer("bus", PTP.encode()), hub.dealer("bus", NTP.encode())
    now = _now()
    flood = encode(_sample(PTP, SourceKind.PTP, now))
    sent = sum(ptp.send(flood) for _ in range(10_000))
    ntp.send(encode(_sample(NTP, SourceKind.NTP, now)))
    task.step(now)
    stats = task.guard.stats
    assert stats[NTP].accepted == 1 and not stats[NTP].dropped
    assert stats[PTP].accepted <= 20
    assert stats[PTP].dropped["rate-limited"] + stats[PTP].accepted + hub.dropped >= sent
    snaps = {s.source_id: s for s in task.controller.source_snapshots(now_mono_ns=now.mono_ns)}
    assert snaps[NTP].samples == 1


def test_unknown_senders_are_refused() -> None:
    hub, task = _task()
    hub.dealer("bus", b"stranger").send(encode(_sample(PTP, SourceKind.PTP, _now())))
    task.step(_now())
    assert task.guard.totals() == {"unknown-sender": 1}
