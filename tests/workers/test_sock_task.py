"""The sock role: built by the registry on a handed-over socket, samples to the bus, drops counted.

The socket is made as the supervisor makes it (plumbing/feeder_socket.py) and
its fd passed in the wiring, as both modes do; the test plays the feeder.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from ntpd_py.core.config import Config
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.refclock_sock import encode_sock_sample
from ntpd_py.core.sock_source import SILENCE_NS
from ntpd_py.core.worker_spec import WorkerSpec, build_specs
from ntpd_py.ipc.messages import SampleMsg, SourceStatus, Unreachable
from ntpd_py.plumbing.feeder_socket import create_sock_socket
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.plumbing.seccomp_profiles import ROLES as PROFILES
from ntpd_py.supervisor.sources import source_set
from ntpd_py.workers.registry import ROLES, Wiring, build_task
from ntpd_py.workers.sock import SockTask

from tests.doubles import FakeClock, FakeLink, LogCapture, channel_pair


def _config(path: str, tmp_path: Path) -> Config:
    return load_config_text(f'[daemon]\nclock = "observe"\nruntime-dir = "{tmp_path}"\n'
                            f'[[source]]\nmode = "sock"\npath = "{path}"\nprecision = 1e-3\n')


def _now() -> Now:
    return Now(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns())


def _task(tmp_path: Path) -> tuple[SockTask, WorkerSpec, str, object]:
    path = str(tmp_path / "gps.sock")
    config = _config(path, tmp_path)
    (spec,) = [s for s in build_specs(config) if s.role == "sock"]
    sock = create_sock_socket(path)
    bus, _clock_control = channel_pair()
    wiring = Wiring(config=config, spec=spec, log=LogCapture(spec.worker_id).logger,
                    clock=FakeClock(), bus=bus, link=FakeLink(), fds=[sock.detach()])
    task = build_task(ROLES["sock"], wiring)
    assert isinstance(task, SockTask)
    return task, spec, path, bus


def test_spec_role_profile_and_source_entry(tmp_path: Path) -> None:
    path = str(tmp_path / "gps.sock")
    config = _config(path, tmp_path)
    (spec,) = [s for s in build_specs(config) if s.role == "sock"]
    assert spec.worker_id == f"sock:{path}" and spec.is_source
    assert ROLES["sock"].seccomp_profile == "sock"
    assert PROFILES["sock"] == PROFILES["ptp"]  # nothing beyond a PHC reader: no bind
    (entry,) = source_set(config, [spec]).sources
    assert (entry.kind, entry.name, entry.source_id) == ("sock", path, spec.worker_id)
    assert entry.poll_min <= 0 <= entry.poll_max


def test_samples_go_to_the_bus_and_drops_are_counted(tmp_path: Path) -> None:
    task, spec, path, bus = _task(tmp_path)
    assert len(task.pollables()) == 3  # bus, link, the feeder's socket
    feeder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        task.step(_now())
        base = time.time_ns()
        for i in range(4):
            feeder.sendto(encode_sock_sample(base - (4 - i) * 100_000_000, 0.25), path)
        feeder.sendto(b"\x00" * 7, path)
        feeder.sendto(encode_sock_sample(base, 0.0, magic=1), path)
        feeder.sendto(encode_sock_sample(base, 0.0, pulse=True), path)
        task.step(_now())
        task.status_now()
        task.step(_now())
    finally:
        feeder.close()
        task.close()
    messages = bus.sent_messages()  # type: ignore[attr-defined]
    samples = [m for m in messages if isinstance(m, SampleMsg)]
    assert len(samples) == 4
    assert all(s.kind == "sock" and s.source_id == spec.worker_id for s in samples)
    assert all(s.offset_s == pytest.approx(0.25) for s in samples)
    status = [m for m in messages if isinstance(m, SourceStatus)][-1]
    assert status.kind == "sock" and status.name == path
    assert status.counters["samples"] == 4
    assert status.counters["drop:wrong-size"] == 1
    assert status.counters["drop:wrong-magic"] == 1
    assert status.counters["drop:pulse"] == 1
    assert status.state == "rejecting"  # three drops in a row, said in the detail
    assert "in a row dropped" in status.detail
    assert status.poll_log2 == -3  # 100 ms apart: the feeder's pace


def test_a_feeder_that_stops_makes_the_source_unreachable(tmp_path: Path) -> None:
    task, spec, path, bus = _task(tmp_path)
    feeder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        now = _now()
        task.step(now)
        feeder.sendto(encode_sock_sample(time.time_ns(), 0.0), path)
        task.step(_now())
        later = Now(now.mono_ns + SILENCE_NS + 1_000_000_000, now.real_ns)
        task.step(later)
        task.step(later)
    finally:
        feeder.close()
        task.close()
    messages = bus.sent_messages()  # type: ignore[attr-defined]
    assert any(isinstance(m, Unreachable) and m.source_id == spec.worker_id for m in messages)
    status = [m for m in messages if isinstance(m, SourceStatus)][-1]
    assert status.state == "unreachable" and "no sample" in status.detail


def test_the_builder_refuses_to_run_without_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "gps.sock")
    config = _config(path, tmp_path)
    (spec,) = [s for s in build_specs(config) if s.role == "sock"]
    bus, _ = channel_pair()
    wiring = Wiring(config=config, spec=spec, log=LogCapture(spec.worker_id).logger,
                    clock=FakeClock(), bus=bus, link=FakeLink(), fds=[])
    with pytest.raises(ValueError, match="no socket"):
        build_task(ROLES["sock"], wiring)


def test_under_the_simulated_clock_samples_are_against_it(tmp_path: Path) -> None:
    """gpsd stamps with the host's clock; with clock = "simulated" the daemon's local
    clock is the simulated one, so the worker moves each sample onto it."""
    from ntpd_py.plumbing.simclock import SimClock

    path = str(tmp_path / "gps.sock")
    config = load_config_text(f'[daemon]\nclock = "simulated"\nruntime-dir = "{tmp_path}"\n'
                              f'[[source]]\nmode = "sock"\npath = "{path}"\n'
                              "precision = 1e-3\n")
    (spec,) = [s for s in build_specs(config) if s.role == "sock"]
    clock_file = str(tmp_path / "simclock")
    SimClock.create(clock_file, 0.3, 0.0)  # the simulated clock is 0.3 s ahead of the host's
    sock = create_sock_socket(path)
    bus, _clock_control = channel_pair()
    wiring = Wiring(config=config, spec=spec, log=LogCapture(spec.worker_id).logger,
                    clock=SimClock(clock_file), bus=bus, link=FakeLink(), fds=[sock.detach()])
    task = build_task(ROLES["sock"], wiring)
    feeder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        task.step(_now())
        feeder.sendto(encode_sock_sample(time.time_ns() - 1_000_000, 0.25), path)
        task.step(_now())
    finally:
        feeder.close()
        task.close()
    (sample,) = [m for m in bus.sent_messages() if isinstance(m, SampleMsg)]  # type: ignore[attr-defined]
    # reference = host + 0.25 s = simulated - 0.3 s + 0.25 s (timeval: 1 µs rounding)
    assert sample.offset_s == pytest.approx(-0.05, abs=2e-6)
    assert abs(sample.realtime_ns - (time.time_ns() + 300_000_000)) < 1_000_000_000
