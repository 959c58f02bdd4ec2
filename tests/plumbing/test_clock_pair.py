"""Pairing CLOCK_MONOTONIC with CLOCK_REALTIME, and a simulated clock that follows host steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.plumbing import clock_pair, simclock
from ntpd_py.plumbing.clock_pair import mono_real_pair
from ntpd_py.plumbing.simclock import SimClock


class _Host:
    """A host whose clocks the test drives: each read costs 50 ns, some reads are
    preempted, and realtime can be stepped against monotonic."""

    def __init__(self) -> None:
        self.mono = 1_000_000_000
        self.real_minus_mono = 1_700_000_000_000_000_000
        self.stalls: list[int] = []  # ns lost before each coming read

    def get(self, clock_id: int) -> int:
        self.mono += 50 + (self.stalls.pop(0) if self.stalls else 0)
        if clock_id == time.CLOCK_MONOTONIC:
            return self.mono
        assert clock_id == time.CLOCK_REALTIME
        return self.mono + self.real_minus_mono


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Host]:
    fake = _Host()
    monkeypatch.setattr(time, "clock_gettime_ns", fake.get)
    yield fake


def test_a_preempted_read_is_not_the_pair_chosen(host: _Host) -> None:
    # the first try is preempted 30 µs between its monotonic and realtime reads
    host.stalls = [0, 30_000, 0]
    mono, real = mono_real_pair()
    assert abs((real - mono) - host.real_minus_mono) <= 50


def test_every_try_preempted_still_bounds_the_error_by_the_window(host: _Host) -> None:
    host.stalls = [0, 30_000, 0] * clock_pair.PAIR_TRIES
    mono, real = mono_real_pair()
    assert abs((real - mono) - host.real_minus_mono) <= 30_050 // 2 + 50


def test_the_simulated_world_follows_a_host_realtime_step(tmp_path: Path, host: _Host) -> None:
    path = str(tmp_path / "sim-clock")
    SimClock.create(path, initial_offset_s=0.05, frequency=0.0)
    clock = SimClock(path)
    mono = host.mono
    before_true, before_local = clock.true_ns(mono), clock.local_ns(mono)
    assert abs(before_true - (mono + host.real_minus_mono)) <= 100
    host.real_minus_mono += 30_000  # something else steps this machine's clock 30 µs
    host.mono += simclock.HOST_STEP_CHECK_NS
    mono = host.mono
    # true time is again the host's realtime, so an NTP server here agrees with the
    # simulated PHC; the local clock moved with it and its error is unchanged
    assert abs(clock.true_ns(mono) - (mono + host.real_minus_mono)) <= 100
    assert clock.local_ns(mono) - clock.true_ns(mono) == before_local - before_true
    assert clock.realtime_from_kernel_ns(mono + host.real_minus_mono) - clock.local_ns(mono) \
        in range(-200, 200)
