"""The simulated local clock of `clock = "simulated"`, shared by every process.

Like a kernel clock, it lives outside the processes that read and steer it: a
small memory-mapped file in the runtime directory, created by the supervisor.
True time is this machine's CLOCK_MONOTONIC mapped to its realtime at
creation; the simulated local clock runs `initial offset + frequency error`
away from it, plus the corrections clock-control applies (frequency and
steps). Readers take a seqlock-consistent snapshot; only clock-control writes.
Because the state lives in the file, a restarted clock-control finds the clock
exactly as it left it, as with a real kernel clock.

True time follows this machine's realtime clock even when something else steps
it (a VM agent, a time daemon on the CI host): every reader adds how far
realtime has moved against CLOCK_MONOTONIC since creation, so the simulated
world and an NTP server on this machine never disagree by a host step.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Any

from .clock_pair import mono_real_pair
from .scheduler import Now

__all__ = ["SimClock"]

_MAGIC = 0x4E54504453494D31  # "NTPDSIM1"
# magic, seq, true_base_mono, true_base_real, free_offset_ns, free_freq,
# ctl_base_mono, ctl_phase_ns, ctl_freq, steps, leap
_LAYOUT = struct.Struct("<QQqqqdqqdQq")
_SIZE = 4096
# How often a reader looks again at how far the host's realtime has been stepped.
HOST_STEP_CHECK_NS = 100_000_000
# Smaller apparent steps are the pair reads' own jitter: following them would add
# noise and make a seeded run unrepeatable.
HOST_STEP_MIN_NS = 2_000


class SimClock:
    """Reader (and, for clock-control, writer) of the shared simulated clock."""

    def __init__(self, path: str, writable: bool = False, model: Any = None) -> None:
        # model: a core.sim LocalClockModel giving the free-running error instead of
        # the file's constant offset and frequency (a scenario's local clock).
        self._model = model
        flags = os.O_RDWR if writable else os.O_RDONLY
        fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        if self._read()[0] != _MAGIC:
            raise ValueError(f"{path} is not an ntpd-py simulated clock")
        self.path = path
        self._host_step_ns = 0
        self._host_step_checked: int | None = None

    @staticmethod
    def create(path: str, initial_offset_s: float, frequency: float, mode: int = 0o644) -> None:
        """Make a new simulated clock file (the supervisor does this at start)."""
        mono, real = mono_real_pair()
        data = _LAYOUT.pack(
            _MAGIC, 0, mono, real, round(initial_offset_s * 1e9), frequency, mono, 0, 0.0, 0, 0
        )
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data.ljust(_SIZE, b"\0"))
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def _read(self) -> tuple[int, ...]:
        while True:
            before = struct.unpack_from("<Q", self._map, 8)[0]
            fields = _LAYOUT.unpack_from(self._map, 0)
            after = struct.unpack_from("<Q", self._map, 8)[0]
            if before == after and before % 2 == 0:
                return fields

    def _state(self) -> tuple[int, ...]:
        """The shared state with the realtime base moved by any host step since creation."""
        fields = self._read()
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        checked = self._host_step_checked
        if checked is None or not 0 <= mono - checked < HOST_STEP_CHECK_NS:
            pair_mono, pair_real = mono_real_pair()
            step = (pair_real - pair_mono) - (fields[3] - fields[2])
            if abs(step - self._host_step_ns) >= HOST_STEP_MIN_NS:
                self._host_step_ns = step
            self._host_step_checked = mono
        if not self._host_step_ns:
            return fields
        return (*fields[:3], fields[3] + self._host_step_ns, *fields[4:])

    def snapshot(self) -> tuple[int, ...]:
        """One consistent reading of the clock's state, for several conversions in a row
        (a simulated PHC's batch of readings reads the shared page once, not 3 × 25 times)."""
        return self._state()

    def elapsed_ns(self, mono_ns: int, snap: tuple[int, ...] | None = None) -> int:
        """True time since the world began (the scenario's t)."""
        return int(mono_ns - (snap or self._read())[2])

    def true_ns(self, mono_ns: int, snap: tuple[int, ...] | None = None) -> int:
        _, _, base_mono, base_real, *_ = snap or self._state()
        return int(base_real + (mono_ns - base_mono))

    def local_ns(self, mono_ns: int, snap: tuple[int, ...] | None = None) -> int:
        (_, _, base_mono, base_real, free_off, free_freq, ctl_mono, ctl_phase, ctl_freq, _, _) = (
            snap or self._state()
        )
        elapsed = mono_ns - base_mono
        drift = round(free_freq * elapsed) + round(ctl_freq * (mono_ns - ctl_mono))
        if self._model is not None:
            p = self._model.params
            drift += round((p.offset_s + self._model.integrated(elapsed)) * 1e9)
        return int(base_real + elapsed + free_off + ctl_phase + drift)

    def offset_to_true_s(self, mono_ns: int) -> float:
        """local - true, seconds: the error the daemon is trying to remove."""
        return (self.local_ns(mono_ns) - self.true_ns(mono_ns)) / 1e9

    def now(self) -> Now:
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return Now(mono, self.local_ns(mono))

    def realtime_from_kernel_ns(self, kernel_real_ns: int) -> int:
        mono, real = mono_real_pair()
        return kernel_real_ns + (self.local_ns(mono) - real)

    @property
    def frequency(self) -> float:
        return float(self._read()[8])

    @property
    def steps(self) -> int:
        return int(self._read()[9])

    def _write(self, ctl_mono: int, ctl_phase: int, ctl_freq: float, steps: int) -> None:
        fields: list[int | float] = list(self._read())  # ctl_freq is the one float
        seq = fields[1]
        struct.pack_into("<Q", self._map, 8, seq + 1)  # odd: readers retry
        fields[6:10] = [ctl_mono, ctl_phase, ctl_freq, steps]
        fields[1] = seq + 1
        _LAYOUT.pack_into(self._map, 0, *fields)
        struct.pack_into("<Q", self._map, 8, seq + 2)

    def set_frequency(self, freq: float) -> None:
        fields = self._read()
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        phase = fields[7] + round(fields[8] * (mono - fields[6]))
        self._write(mono, phase, freq, fields[9])

    def step(self, offset_ns: int) -> None:
        fields = self._read()
        self._write(fields[6], fields[7] + offset_ns, fields[8], fields[9] + 1)

    def close(self) -> None:
        self._map.close()
