"""Clock backends: the simulated clock file, the observe-only virtual clock, and the guard
that keeps the system backend away from a host's test suite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ntpd_py.core.actions import SetFrequency, SetLeap, Step
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.plumbing.simclock import SimClock
from ntpd_py.workers.clock_backends import (
    FORBID_ENV,
    ObserveClock,
    SimulatedClock,
    SystemClock,
    SystemClockForbidden,
)


def test_system_backend_cannot_be_built_in_the_host_test_suite() -> None:
    assert os.environ.get(FORBID_ENV) == "1"
    with pytest.raises(SystemClockForbidden, match="QEMU guest"):
        SystemClock()


def _mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def test_sim_clock_offset_frequency_and_steering(tmp_path: Path) -> None:
    path = str(tmp_path / "sim-clock")
    SimClock.create(path, initial_offset_s=0.05, frequency=20e-6)
    reader, writer = SimClock(path), SimClock(path, writable=True)
    t0 = _mono()
    assert reader.offset_to_true_s(t0) == pytest.approx(0.05, abs=1e-6)
    # +20 ppm over 10 s of (hypothetical) monotonic time
    assert reader.offset_to_true_s(t0 + 10**10) - reader.offset_to_true_s(t0) == \
        pytest.approx(200e-6, rel=1e-6)
    writer.step(-50_000_000)
    assert reader.steps == 1
    assert reader.offset_to_true_s(t0) == pytest.approx(0.0, abs=1e-6)
    writer.set_frequency(-20e-6)  # cancel the frequency error
    t1 = _mono()
    before = reader.offset_to_true_s(t1)
    assert reader.offset_to_true_s(t1 + 10**10) == pytest.approx(before, abs=1e-9)
    assert reader.frequency == -20e-6
    now = reader.now()
    assert abs(now.real_ns - reader.local_ns(now.mono_ns)) < 1_000_000


def test_sim_clock_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="not an ntpd-py simulated clock"):
        SimClock(str(path))


def test_simulated_backend_steers_the_shared_clock(tmp_path: Path) -> None:
    path = str(tmp_path / "sim-clock")
    SimClock.create(path, 1.0, 0.0)
    backend = SimulatedClock(SimClock(path, writable=True))
    backend.apply(Step(offset_ns=-1_000_000_000))
    backend.apply(SetFrequency(freq=1e-3))  # clamped to the kernel's 500 ppm
    assert backend.frequency() == 500e-6
    assert SimClock(path).offset_to_true_s(_mono()) == pytest.approx(0.0, abs=1e-3)


def _sample(offset: float, mono: int) -> Sample:
    return Sample(source_id="s", kind=SourceKind.PTP, offset_s=offset, delay_s=0.0,
                  uncertainty_s=1e-9, root_delay_s=0.0, root_dispersion_s=0.0, stratum=0,
                  leap=LeapIndicator.NONE, reference_id=0, mono_ns=mono, realtime_ns=0,
                  poll_log2=0)


def test_observe_backend_steers_only_a_virtual_clock() -> None:
    backend = ObserveClock()
    mono = _mono()
    # The real clock is 30 ms behind the reference; the algorithm steps +30 ms.
    assert backend.view_sample(_sample(0.030, mono)).offset_s == pytest.approx(0.030)
    backend.apply(Step(offset_ns=30_000_000))
    assert backend.view_sample(_sample(0.030, mono)).offset_s == pytest.approx(0.0, abs=1e-12)
    backend.apply(SetFrequency(freq=10e-6))
    later = _mono() + 10**9
    assert backend.view_sample(_sample(0.030, later)).offset_s == pytest.approx(-10e-6, rel=0.1)
    backend.apply(SetLeap(leap=LeapIndicator.INSERT))
    assert backend.leap == LeapIndicator.INSERT and backend.steps == 1
