"""The pps role at the file-descriptor level: a kernel-like PPS double, clock-control's state.

No PPS device exists on the test machine (tests/integration/test_pps_guest.py reads
a real one in the QEMU guest), so the task is driven through a double that answers
the ioctls as drivers/pps/pps.c does for a zero timeout (the latest edges, at once);
the registry's own build is checked on a real fd that is no PPS device.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ntpd_py.core import pps_abi
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.worker_spec import build_specs
from ntpd_py.ipc.framing import encode
from ntpd_py.ipc.messages import ClockStateMsg, SampleMsg, SourceStatus, SourceView, SystemView
from ntpd_py.plumbing.pps_capture import set_pps_capture
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.supervisor.sources import source_set
from ntpd_py.workers.pps import PpsTask
from ntpd_py.workers.refclock_io import PpsDevice
from ntpd_py.workers.registry import ROLES, STATE_ROLES, Wiring, build_task

from tests.doubles import FakeClock, FakeLink, LogCapture, channel_pair

NS = 1_000_000_000
PATH = "/dev/pps0"


class LatestEdge:
    """PPS ioctls as the kernel answers them with a zero fetch timeout: the latest edge."""

    def __init__(self, caps: int, mode: int) -> None:
        self.caps, self.mode = caps, mode
        self.seq, self.at_ns = 0, 0

    def pulse(self, at_ns: int) -> None:
        self.seq += 1
        self.at_ns = at_ns

    def __call__(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        if request == pps_abi.PPS_GETCAP:
            buf[:4] = self.caps.to_bytes(4, "little")
        elif request == pps_abi.PPS_GETPARAMS:
            buf[:] = pps_abi.encode_params(pps_abi.PpsParams(1, self.mode))
        elif request == pps_abi.PPS_SETPARAMS:
            self.mode = pps_abi.decode_params(bytes(buf)).mode
        elif request == pps_abi.PPS_FETCH:
            buf[0:4] = self.seq.to_bytes(4, "little")
            buf[8:16] = (self.at_ns // NS).to_bytes(8, "little", signed=True)
            buf[16:20] = (self.at_ns % NS).to_bytes(4, "little")
            buf[40:44] = self.mode.to_bytes(4, "little")
        else:
            raise OSError(25, "Inappropriate ioctl for device")
        return 0


SYSTEM = SystemView(synchronized=True, clock_backend="observe", offset_s=0.0,
                    offset_uncertainty_s=1e-4, frequency_ppm=0.0,
                    frequency_uncertainty_ppm=0.05, stratum=1, reference_id=1,
                    root_delay_s=0.0, root_dispersion_s=1e-3, leap=0, precision_log2=-23,
                    steps=0, accumulated_steps_s=0.0, last_update_age_s=0.5,
                    reference_time_ns=None)


def _gps_view(state: str = "*") -> SourceView:
    return SourceView(source_id="sock:/run/gps.sock", kind="sock", name="/run/gps.sock",
                      resolved=None, state=state, worker_state="running", detail="",
                      offset_s=0.0, uncertainty_s=1e-3, delay_s=0.0, last_offset_s=0.0,
                      poll_log2=0, reach=0, samples=20, last_sample_age_s=0.5, stratum=0,
                      reference_id=1, root_delay_s=0.0, root_dispersion_s=0.0, method=None,
                      last_window_s=None, counters={})


def _task(kernel: LatestEdge, sim: object = None) -> tuple[PpsTask, object, object, int]:
    from ntpd_py.core.config import PpsSourceConfig

    fd = os.open("/dev/null", os.O_RDONLY)
    config = PpsSourceConfig.model_validate({"mode": "pps", "path": PATH, "precision": 1e-7})
    bus, clock_control = channel_pair()
    task = PpsTask(source=config, worker_id=f"pps:{PATH}", bus=bus, link=FakeLink(),
                   log=LogCapture("pps").logger, device=PpsDevice(fd, PATH, ioctl=kernel),
                   sim=sim)
    return task, bus, clock_control, fd


def _now() -> Now:
    return Now(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns())


def _statuses(bus: object) -> list[SourceStatus]:
    return [m for m in bus.sent_messages() if isinstance(m, SourceStatus)]  # type: ignore[attr-defined]


def test_spec_role_and_source_entry(tmp_path: Path) -> None:
    config = load_config_text(f'[daemon]\nclock = "observe"\nruntime-dir = "{tmp_path}"\n'
                              f'[[source]]\nmode = "pps"\npath = "{PATH}"\nprecision = 1e-7\n'
                              "period = 0.5\n")
    (spec,) = [s for s in build_specs(config) if s.role == "pps"]
    assert spec.worker_id == f"pps:{PATH}" and spec.is_source
    assert ROLES["pps"].seccomp_profile == "pps" and "pps" in STATE_ROLES
    (entry,) = source_set(config, [spec]).sources
    assert (entry.kind, entry.poll_log2, entry.poll_min, entry.poll_max) == ("pps", -1, -1, -1)


class AheadSimClock:
    """A simulated clock `ahead_ns` ahead of the host's CLOCK_REALTIME."""

    def __init__(self, ahead_ns: int) -> None:
        self.base = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC) + ahead_ns

    def local_ns(self, mono_ns: int) -> int:
        return mono_ns + self.base


@pytest.mark.parametrize(("sim", "expected_s"), [(None, -30e-6),
                                                 (AheadSimClock(200_010_000), -0.20004)])
def test_pulses_paired_with_clock_controls_whole_seconds_are_published(
        sim: AheadSimClock | None, expected_s: float) -> None:
    # With clock = "simulated" (sim) the kernel's host-clock stamps are moved onto the
    # simulated clock before pairing: the whole seconds are in its frame.
    kernel = LatestEdge(pps_abi.PPS_CAPTUREBOTH | pps_abi.PPS_CANWAIT, pps_abi.PPS_CAPTUREASSERT)
    kernel.pulse(time.time_ns() - 3 * NS)  # an old edge, captured before we started
    task, bus, clock_control, _fd = _task(kernel, sim)
    try:
        task.step(_now())  # check the device, begin the first fetch
        assert task.poller is not None and task.poller.next_poll_ns is not None
        # no state from clock-control yet: a pulse cannot be paired
        if time.time_ns() % NS < 1_000_000:
            time.sleep(0.002)  # both pulses below must be in the past
        second = time.time_ns() // NS * NS - NS  # pulses within the last two seconds
        kernel.pulse(second + 30_000)
        task.step(Now(task.poller.next_poll_ns, 0))
        task.status_now()
        task.step(_now())
        waiting = _statuses(bus)[-1]
        assert waiting.state == "waiting"
        assert "waiting for a source with whole seconds" in waiting.detail
        # clock-control's state: a selected GPS source says the clock is right
        clock_control.send(encode(ClockStateMsg(mono_ns=1, realtime_ns=2, system=SYSTEM,  # type: ignore[attr-defined]
                                                sources=[_gps_view()])))
        kernel.pulse(second + NS + 30_000)
        task.step(Now(task.poller.next_poll_ns, 0))
        task.status_now()
        task.step(_now())
    finally:
        task.close()
    samples = [m for m in bus.sent_messages() if isinstance(m, SampleMsg)]  # type: ignore[attr-defined]
    assert len(samples) == 1  # the old edge and the unpaired one were not published
    assert samples[0].kind == "pps"
    # (the clocks are read a few µs apart: the host pair and the fake's own base)
    assert samples[0].offset_s == pytest.approx(expected_s, abs=2e-5)
    status = _statuses(bus)[-1]
    assert status.state == "running" and "sock:/run/gps.sock" in status.detail
    assert status.counters["samples"] == 1 and status.counters["drop:unpaired"] == 1


def test_a_fetch_without_an_edge_times_out_without_blocking() -> None:
    kernel = LatestEdge(pps_abi.PPS_CAPTUREASSERT | pps_abi.PPS_CANWAIT, pps_abi.PPS_CAPTUREASSERT)
    task, bus, _cc, _fd = _task(kernel)
    try:
        start = _now()
        task.step(start)
        assert task.poller is not None
        began = time.monotonic()
        later = Now(start.mono_ns + task.source.timeout_ns + NS, 0)
        task.step(later)
        assert time.monotonic() - began < 0.5  # polled, never waited in the ioctl
        task.status_now()
        task.step(later)
    finally:
        task.close()
    status = _statuses(bus)[-1]
    assert status.state == "waiting" and "no pulse" in status.detail


def test_an_edge_the_supervisor_could_not_enable_is_explained() -> None:
    # the device can capture assert, but nobody set it (PPS_SETPARAMS needs CAP_SYS_TIME)
    kernel = LatestEdge(pps_abi.PPS_CAPTUREASSERT | pps_abi.PPS_CANWAIT, 0)
    task, bus, _cc, _fd = _task(kernel)
    try:
        task.step(_now())
    finally:
        task.close()
    status = _statuses(bus)[-1]
    assert status.state == "failed"
    assert "CAP_SYS_TIME" in status.detail and "assert" in status.detail
    # with the capability, the supervisor's call sets it
    assert set_pps_capture(3, "assert", ioctl=kernel).mode & pps_abi.PPS_CAPTUREASSERT


def test_the_registry_builds_it_on_a_handed_fd_and_the_kernel_refuses_a_non_pps_fd(
        tmp_path: Path) -> None:
    config = load_config_text(f'[daemon]\nclock = "observe"\nruntime-dir = "{tmp_path}"\n'
                              f'[[source]]\nmode = "pps"\npath = "{PATH}"\nprecision = 1e-7\n')
    (spec,) = [s for s in build_specs(config) if s.role == "pps"]
    for fds in ([os.open("/dev/null", os.O_RDONLY)], []):
        bus, _cc = channel_pair()
        wiring = Wiring(config=config, spec=spec, log=LogCapture("pps").logger,
                        clock=FakeClock(), bus=bus, link=FakeLink(), fds=fds)
        task = build_task(ROLES["pps"], wiring)
        assert isinstance(task, PpsTask)
        try:
            task.step(_now())
            task.step(_now())
        finally:
            task.close()
        status = _statuses(bus)[-1]
        assert status.state == "failed"
        if fds:
            assert "not a PPS device" in status.detail  # the real kernel's ENOTTY
        else:
            assert "could not be opened by the supervisor" in status.detail
