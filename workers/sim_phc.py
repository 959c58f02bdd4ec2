"""A simulated PHC for `clock = "simulated"`: kernel-like readings against the shared clock.

Each reading is a (sys_before, phc, sys_after) triplet: the system stamps come
from the shared simulated local clock, the PHC keeps true time plus its
configured bias and white noise. Noise and read failures are drawn from an RNG
seeded by (seed, path), so a run is repeatable.

The read method the worker asks for shapes the triplets as the kernel's
ioctls do: EXTENDED (and clock_gettime) give separate triplets; basic
PTP_SYS_OFFSET interleaves sys, phc, sys, ..., so each reading's closing
stamp opens the next; PRECISE is one cross-timestamp. A scenario's
reading-level PHC (``method`` = precise / extended / basic) supports its own
method and the ones after it in :class:`ReadMethod`'s order (as a device
without cross-timestamps falls back to EXTENDED, one without gettimex64 to
basic); an earlier one fails with UNSUPPORTED, and each reading's window is
its own up and down transit delays, as in ``ntpd-py simulate``.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ntpd_py.core.config import SimulationConfig
from ntpd_py.core.phc import PhcCaps, Reading, ReadMethod
from ntpd_py.core.ptp_events import DeviceErrorKind
from ntpd_py.plumbing.simclock import SimClock

from ._phc import PhcError

if TYPE_CHECKING:
    from ntpd_py.core.sim.phc import PhcModel

__all__ = ["SimPhcDevice"]

READ_WINDOW_NS = 500  # a typical EXTENDED reading window


def _monotonic_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class SimPhcDevice:
    """Duck-types workers._phc.PhcDevice (caps, read, close) for the PTP worker."""

    def __init__(self, path: str, clock: SimClock, sim: SimulationConfig,
                 model: PhcModel | None = None,
                 monotonic_ns: Callable[[], int] = _monotonic_ns) -> None:
        self._model = model  # from a scenario, or None for the config's bias and noise
        self._monotonic_ns = monotonic_ns  # a test passes a fake clock's
        self._reads = 0
        self.path = path
        self.resolved_path = path
        self.device_index = None
        self.clock_name = "simulated"
        self._clock = clock
        self._bias_ns = round(sim.phc_bias.get(path, 0.0) * 1e9)
        self._noise_ns = sim.phc_noise * 1e9
        self._failure_rate = sim.phc_read_failure_rate
        digest = hashlib.sha256(f"{sim.seed}:{path}".encode()).digest()
        self._rng = random.Random(int.from_bytes(digest[:8], "big"))

    def _supports(self, method: ReadMethod) -> bool:
        if self._model is None or self._model.params.method == "white":
            return method is not ReadMethod.PRECISE
        order = list(ReadMethod)
        return order.index(method) >= order.index(ReadMethod(self._model.params.method))

    def caps(self) -> PhcCaps:
        return PhcCaps(
            max_adj_ppb=0,
            n_alarm=0,
            n_ext_ts=0,
            n_per_out=0,
            pps=False,
            n_pins=0,
            cross_timestamping=self._supports(ReadMethod.PRECISE),
            adjust_phase=False,
            max_phase_adj_ns=0,
        )

    def read(self, method: ReadMethod, n: int) -> list[Reading]:
        if not self._supports(method):
            raise PhcError(DeviceErrorKind.UNSUPPORTED, f"{self.path}: no {method} reads")
        if self._model is not None and self._model.params.method != "white":
            return self._read_level(method, n)
        if self._model is not None:
            return self._read_model(method, n)
        if self._rng.random() < self._failure_rate:
            raise PhcError(DeviceErrorKind.IO, f"{self.path}: simulated read failure")
        readings = []
        clock, snap = self._clock, self._clock.snapshot()
        mono = self._monotonic_ns()
        for _ in range(n):
            if method is not ReadMethod.BASIC:
                mono = self._monotonic_ns()
            before = clock.local_ns(mono, snap)
            after = clock.local_ns(mono + READ_WINDOW_NS, snap)
            noise = round(self._rng.gauss(0.0, self._noise_ns)) if self._noise_ns else 0
            phc = clock.true_ns(mono + READ_WINDOW_NS // 2, snap) + self._bias_ns + noise
            readings.append(Reading(before, phc, after))
            mono += READ_WINDOW_NS  # basic: this reading's closing stamp opens the next
        return readings

    def _read_level(self, method: ReadMethod, n: int) -> list[Reading]:
        """A reading-level model's read: each reading from its own up and down transits."""
        from ntpd_py.core.sim import rng
        from ntpd_py.core.sim.phc import BACKWARDS_NS

        model, index = self._model, self._reads
        assert model is not None  # read() comes here only with a model
        self._reads += 1
        p = model.params
        if p.read_failure and rng.uniform(model.seed, model.name, "fail", index) < p.read_failure:
            raise PhcError(DeviceErrorKind.IO, f"{self.path}: simulated read failure")
        clock, snap = self._clock, self._clock.snapshot()
        grain = round(p.granularity_s * 1e9)

        def stamp(mono_ns: int) -> int:
            local = clock.local_ns(mono_ns, snap)
            return local - local % grain if grain > 1 else local

        def phc_at(mono_ns: int, key: int) -> int:
            noise = rng.normal(model.seed, model.name, "noise", key, p.noise_s) if p.noise_s \
                else 0.0
            error = model.time_error(clock.elapsed_ns(mono_ns, snap)) + noise
            return clock.true_ns(mono_ns, snap) + round(error * 1e9)

        t = self._monotonic_ns()
        if method is ReadMethod.PRECISE:
            noise = rng.normal(model.seed, model.name, "precise", index, p.precise_noise_s)
            sys = clock.local_ns(t, snap) + round(noise * 1e9)
            return [Reading(sys, phc_at(t, index * 64), sys)]
        if p.max_reads_per_s > 0.0:  # a slow bus; the worker's polls are about 1 s apart
            n = max(1, min(n, int(p.max_reads_per_s)))
        back = BACKWARDS_NS if model.backwards(index) else 0
        first_end_ns = 0
        readings = []
        before = stamp(t)
        for i in range(n):
            key = index * 64 + i
            latch = t + model.transit_ns(key, "up")
            t = latch + model.transit_ns(key, "down")
            at = t
            if method is ReadMethod.BASIC and i < n - 1 and p.stamp_jitter_s:
                # the shared stamp lands early or late, never past either latch
                at = min(max(t + model.stamp_jitter_ns(key), latch),
                         t + model.transit_ns(key + 1, "up"))
            after = stamp(at)
            shift = 0
            if i == 0:
                first_end_ns = after
            elif back:  # the `time-backwards` fault, as in _read_model
                shift = before - first_end_ns + back
            readings.append(Reading(before - shift, phc_at(latch, key), after - shift))
            if method is ReadMethod.BASIC:
                before = after  # PTP_SYS_OFFSET: this closing stamp opens the next reading
            else:
                t += round(p.gap_s * 1e9)
                before = stamp(t)
        return readings

    def _read_model(self, method: ReadMethod, n: int) -> list[Reading]:
        from ntpd_py.core.sim import rng
        from ntpd_py.core.sim.phc import BACKWARDS_NS

        model, index = self._model, self._reads
        assert model is not None  # read() comes here only with a model
        self._reads += 1
        p = model.params
        if p.read_failure and rng.uniform(model.seed, model.name, "fail", index) < p.read_failure:
            raise PhcError(DeviceErrorKind.IO, f"{self.path}: simulated read failure")
        readings = []
        clock, snap = self._clock, self._clock.snapshot()
        # the `time-backwards` fault: every reading after the first starts BACKWARDS_NS
        # before the first one ended, however long this process was preempted in between
        # (a fixed shift would stop being "backwards" on a loaded machine)
        back = BACKWARDS_NS if model.backwards(index) else 0
        first_end_ns = 0
        window = max(READ_WINDOW_NS, round(p.window_s * 1e9))
        mono = self._monotonic_ns()
        for i in range(n):
            key = index * 64 + i
            if method is not ReadMethod.BASIC:
                mono = self._monotonic_ns()
            elif i:
                mono += window  # basic: this reading opens where the previous one closed
            mid = mono + window // 2
            noise = rng.normal(model.seed, model.name, "noise", key, p.noise_s) if p.noise_s \
                else 0.0
            error = model.time_error(clock.elapsed_ns(mid, snap)) + noise
            phc = clock.true_ns(mid, snap) + round(error * 1e9)
            before, after = clock.local_ns(mono, snap), clock.local_ns(mono + window, snap)
            if i == 0:
                first_end_ns = after
            elif back:
                shift = before - first_end_ns + back
                before, after = before - shift, after - shift
            readings.append(Reading(before, phc, after))
        return readings

    def local_ns(self, mono_ns: int) -> int:
        return self._clock.local_ns(mono_ns)

    def close(self) -> None:
        pass
