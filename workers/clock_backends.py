"""The clocks clock-control can steer: system (kernel), observe-only, simulated.

All three carry out the same :mod:`ntpd_py.core.actions`. The algorithm is
told the truth about what happened: the observe-only backend steers a
*virtual* clock layered over the real one (samples are corrected by that
virtual correction before the algorithm sees them), so its reports are what
the daemon would achieve without moving the real clock — like ``chronyd -x``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import time
from typing import Protocol

from ntpd_py.core.actions import (
    AdvisePoll,
    ClockAction,
    Panic,
    SeekAnotherServer,
    SetErrorEstimate,
    SetFrequency,
    SetLeap,
    SetSynchronized,
    Step,
)
from ntpd_py.core.events import LeapIndicator, Sample
from ntpd_py.core.units import PPM
from ntpd_py.ipc.messages import ClockBackendName
from ntpd_py.plumbing.clock_guard import FORBID_ENV, SystemClockForbidden, system_clock_refusal
from ntpd_py.plumbing.simclock import SimClock

__all__ = [
    "FORBID_ENV",
    "ClockBackend",
    "ObserveClock",
    "SimulatedClock",
    "SystemClock",
    "SystemClockForbidden",
    "system_clock_refusal",
]

MAX_FREQ = 500e-6  # the kernel's limit, s/s

# After a frequency change the kernel reaches the new rate by switching its clocksource
# multiplier between two neighbouring values at each timekeeping update; on an idle
# tickless (NOHZ) machine updates can be a second apart, and the clock then runs that
# long on one multiplier. In the QEMU guest each change left a 20-27 ns phase error
# that way (tests/vm/freq_glitch.py: ±5 ppb changes every second, leftover phase sd
# 25.7 ns; the same changes with the frequency written again every 50 ms, 9.9 ns;
# held, 4.6 ns). Writing the same frequency makes the kernel update its timekeeping
# (as a tick would): so for a while after each change the system backend rewrites it.
FREQUENCY_REFRESH_NS = 50_000_000
FREQUENCY_REFRESH_WINDOW_NS = 2_000_000_000


class ClockBackend(Protocol):
    name: ClockBackendName
    # Rewrite the frequency this often for FREQUENCY_REFRESH_WINDOW_NS after each change
    # (None: never; only the kernel's clock needs it).
    refresh_interval_ns: int | None

    def take_control(self) -> None: ...

    def apply(self, action: ClockAction) -> None: ...

    def frequency(self) -> float: ...

    def view_sample(self, sample: Sample) -> Sample:
        """The sample as the algorithm must see it (observe: against the virtual clock)."""
        ...


# -- the kernel clock --------------------------------------------------------------------

ADJ_OFFSET = 0x0001
ADJ_FREQUENCY = 0x0002
ADJ_MAXERROR = 0x0004
ADJ_ESTERROR = 0x0008
ADJ_STATUS = 0x0010
ADJ_SETOFFSET = 0x0100
ADJ_NANO = 0x2000
STA_PLL = 0x0001
STA_PPSFREQ = 0x0002
STA_PPSTIME = 0x0004
STA_FLL = 0x0008
STA_INS = 0x0010
STA_DEL = 0x0020
STA_UNSYNC = 0x0040
STA_FREQHOLD = 0x0080


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex (x86_64 and other LP64 Linux ABIs)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


class SystemClock:
    """clock_adjtime on CLOCK_REALTIME (or on a PHC's dynamic clock id)."""

    name: ClockBackendName = "system"
    refresh_interval_ns: int | None = FREQUENCY_REFRESH_NS

    def __init__(self, clock_id: int = time.CLOCK_REALTIME) -> None:
        refusal = system_clock_refusal()
        if refusal:
            raise SystemClockForbidden(refusal)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._clock_id = clock_id

    def _adjtime(self, tx: Timex) -> Timex:
        if self._libc.clock_adjtime(ctypes.c_int(self._clock_id), ctypes.byref(tx)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"clock_adjtime: {os.strerror(err)}")
        return tx

    def _read(self) -> Timex:
        return self._adjtime(Timex(modes=0))

    def _set_status(self, set_bits: int, clear_bits: int) -> None:
        status = (self._read().status | set_bits) & ~clear_bits
        self._adjtime(Timex(modes=ADJ_STATUS, status=status))

    def take_control(self) -> None:
        # Switch off the kernel's own PLL/FLL and any adjtime() in progress: from
        # now on only our frequency and steps move the clock.
        self._adjtime(Timex(modes=ADJ_OFFSET, offset=0))
        self._set_status(0, STA_PLL | STA_FLL | STA_PPSFREQ | STA_PPSTIME | STA_FREQHOLD)

    def frequency(self) -> float:
        return float(self._read().freq) / 65536.0 * PPM  # freq is ppm in 16.16 fixed point

    def apply(self, action: ClockAction) -> None:
        match action:
            case SetFrequency(freq=freq):
                freq = max(-MAX_FREQ, min(MAX_FREQ, freq))
                self._adjtime(Timex(modes=ADJ_FREQUENCY, freq=round(freq * 1e6 * 65536)))
            case Step(offset_ns=offset_ns):
                seconds, nanos = divmod(offset_ns, 1_000_000_000)
                tx = Timex(modes=ADJ_SETOFFSET | ADJ_NANO)
                tx.time.tv_sec, tx.time.tv_usec = seconds, nanos
                self._adjtime(tx)
            case SetLeap(leap=leap):
                bits = {LeapIndicator.INSERT: STA_INS, LeapIndicator.DELETE: STA_DEL}.get(leap, 0)
                self._set_status(bits, (STA_INS | STA_DEL) & ~bits)
            case SetErrorEstimate(max_error_s=max_error, est_error_s=est_error):
                self._adjtime(
                    Timex(
                        modes=ADJ_MAXERROR | ADJ_ESTERROR,
                        maxerror=min(round(max_error * 1e6), 16_000_000),
                        esterror=min(round(est_error * 1e6), 16_000_000),
                    )
                )
            case SetSynchronized(synchronized=synced):
                self._set_status(0, STA_UNSYNC) if synced else self._set_status(STA_UNSYNC, 0)
            case AdvisePoll() | SeekAnotherServer() | Panic():
                pass

    def view_sample(self, sample: Sample) -> Sample:
        return sample


# -- a virtual correction (observe) and the simulated clock --------------------------------


class ObserveClock:
    """Steers nothing: keeps a virtual correction over the free-running real clock."""

    name: ClockBackendName = "observe"
    refresh_interval_ns: int | None = None

    def __init__(self) -> None:
        self._base_mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._phase_ns = 0
        self._freq = 0.0
        self.leap = LeapIndicator.NONE
        self.synchronized = False
        self.steps = 0

    def correction_ns(self, mono_ns: int) -> int:
        return self._phase_ns + round(self._freq * (mono_ns - self._base_mono))

    def export_state(self) -> dict[str, int | float]:
        """The virtual correction, so a restarted clock-control keeps the same virtual clock."""
        return {
            "base_mono": self._base_mono,
            "phase_ns": self._phase_ns,
            "freq": self._freq,
            "steps": self.steps,
        }

    def restore_state(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        try:
            base, phase = int(saved["base_mono"]), int(saved["phase_ns"])
            freq, steps = float(saved["freq"]), int(saved["steps"])
        except (KeyError, TypeError, ValueError):
            return
        if abs(freq) <= MAX_FREQ:
            self._base_mono, self._phase_ns, self._freq, self.steps = base, phase, freq, steps

    def take_control(self) -> None:
        pass

    def frequency(self) -> float:
        return self._freq

    def apply(self, action: ClockAction) -> None:
        match action:
            case SetFrequency(freq=freq):
                mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                self._phase_ns = self.correction_ns(mono)
                self._base_mono = mono
                self._freq = max(-MAX_FREQ, min(MAX_FREQ, freq))
            case Step(offset_ns=offset_ns):
                self._phase_ns += offset_ns
                self.steps += 1
            case SetLeap(leap=leap):
                self.leap = leap
            case SetSynchronized(synchronized=synced):
                self.synchronized = synced
            case _:
                pass

    def view_sample(self, sample: Sample) -> Sample:
        # The sample measured reference - real; the algorithm steers the virtual
        # clock (real + correction), so it must see reference - virtual.
        correction = self.correction_ns(sample.mono_ns)
        return dataclasses.replace(
            sample,
            offset_s=sample.offset_s - correction / 1e9,
            realtime_ns=sample.realtime_ns + correction,
        )


class SimulatedClock:
    """Steers the shared simulated clock of `clock = "simulated"`."""

    name: ClockBackendName = "simulated"
    refresh_interval_ns: int | None = None

    def __init__(self, sim: SimClock) -> None:
        self._sim = sim
        self.leap = LeapIndicator.NONE
        self.synchronized = False

    def take_control(self) -> None:
        pass

    def frequency(self) -> float:
        return self._sim.frequency

    def apply(self, action: ClockAction) -> None:
        match action:
            case SetFrequency(freq=freq):
                self._sim.set_frequency(max(-MAX_FREQ, min(MAX_FREQ, freq)))
            case Step(offset_ns=offset_ns):
                self._sim.step(offset_ns)
            case SetLeap(leap=leap):
                self.leap = leap
            case SetSynchronized(synchronized=synced):
                self.synchronized = synced
            case _:
                pass

    def view_sample(self, sample: Sample) -> Sample:
        return sample
