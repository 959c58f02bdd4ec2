"""The simulated local clock: a free-running oscillator plus the corrections it was given.

True time ``t`` is integer nanoseconds since the start of the scenario. The
oscillator's frequency error (local rate minus 1) is

    f_osc(t) = frequency + W(floor(t)) + A * sin(2 pi t / period)

where ``W`` is a random walk with one N(0, wander) step per second (keyed by
the seed, so the same at any evaluation) and the sine is a temperature-like
swing. :class:`LocalClockModel` is that pure function and its integral.

:class:`SimClock` adds what a kernel does with it: a frequency correction
``f`` (kernel sign; the clock then runs at (1 + f_osc)(1 + f)) and steps.
Its error (local minus true) is kept as a continuous part plus integer
nanoseconds of steps, so CLOCK_MONOTONIC (which steps do not move) and
CLOCK_REALTIME both come out exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..units import NS_PER_S
from . import rng

__all__ = ["LocalClockModel", "LocalClockParams", "SimClock"]



@dataclass(frozen=True, slots=True)
class LocalClockParams:
    offset_s: float = 0.0  # initial error, local minus true
    frequency: float = 0.0  # initial frequency error, s/s (positive: local runs fast)
    wander: float = 0.0  # sigma of the per-second frequency random-walk step
    temperature_amplitude: float = 0.0  # s/s
    temperature_period_s: float = 86400.0
    # sigma of the phase step each change of the frequency correction leaves behind:
    # a kernel that carries a change out imperfectly (the QEMU TCG guest's does, by
    # 20-35 ns a change whatever its size; tests/vm/freq_glitch.py)
    frequency_change_noise_s: float = 0.0


class LocalClockModel:
    """The oscillator's frequency error and its integral, as functions of true time."""

    def __init__(self, params: LocalClockParams, seed: int, name: str = "local-clock") -> None:
        self.params = params
        self.seed = seed
        self.name = name
        self._walk = [0.0]  # W(k): frequency offset during second k
        self._prefix = [0.0]  # sum of W(j) for j < k

    def _extend(self, k: int) -> None:
        sigma = self.params.wander
        while len(self._walk) <= k:
            index = len(self._walk)
            step = rng.normal(self.seed, self.name, "walk", index, sigma) if sigma else 0.0
            self._prefix.append(self._prefix[-1] + self._walk[-1])
            self._walk.append(self._walk[-1] + step)

    def frequency(self, t_ns: int) -> float:
        p = self.params
        k = max(t_ns, 0) // NS_PER_S
        self._extend(k)
        swing = 0.0
        if p.temperature_amplitude:
            swing = p.temperature_amplitude * math.sin(
                2 * math.pi * t_ns / NS_PER_S / p.temperature_period_s
            )
        return p.frequency + self._walk[k] + swing

    def integrated(self, t_ns: int) -> float:
        """Seconds the free-running clock has gained on true time over [0, t]."""
        p = self.params
        t_ns = max(t_ns, 0)
        k, frac_ns = divmod(t_ns, NS_PER_S)
        self._extend(k)
        walk = self._prefix[k] + self._walk[k] * frac_ns / NS_PER_S
        swing = 0.0
        if p.temperature_amplitude:
            w = 2 * math.pi / p.temperature_period_s
            swing = p.temperature_amplitude / w * (1.0 - math.cos(w * t_ns / NS_PER_S))
        return p.frequency * t_ns / NS_PER_S + walk + swing


class SimClock:
    """The disciplined local clock: CLOCK_REALTIME and CLOCK_MONOTONIC as functions of true time.

    Corrections must be applied in time order (``t_ns`` never decreases).
    """

    def __init__(self, model: LocalClockModel, *, real_epoch_ns: int, mono_epoch_ns: int) -> None:
        self.model = model
        self.real_epoch_ns = real_epoch_ns
        self.mono_epoch_ns = mono_epoch_ns
        self._anchor_ns = 0
        self._anchor_error = model.params.offset_s  # continuous part at the anchor
        self._anchor_integral = 0.0
        self.correction = 0.0  # frequency correction in force (kernel sign)
        self.steps_ns = 0
        self.frequency_changes = 0

    def _continuous(self, t_ns: int) -> float:
        gained = self.model.integrated(t_ns) - self._anchor_integral
        elapsed = (t_ns - self._anchor_ns) / NS_PER_S
        return self._anchor_error + gained * (1.0 + self.correction) + self.correction * elapsed

    def error(self, t_ns: int) -> float:
        """Local minus true time, seconds."""
        return self._continuous(t_ns) + self.steps_ns / NS_PER_S

    def rate_error(self, t_ns: int) -> float:
        """Local rate minus 1, with the correction in force."""
        return (1.0 + self.model.frequency(t_ns)) * (1.0 + self.correction) - 1.0

    def realtime_ns(self, t_ns: int) -> int:
        return self.real_epoch_ns + t_ns + round(self._continuous(t_ns) * NS_PER_S) + self.steps_ns

    def mono_ns(self, t_ns: int) -> int:
        return self.mono_epoch_ns + t_ns + round(self._continuous(t_ns) * NS_PER_S)

    def set_frequency(self, t_ns: int, freq: float) -> None:
        self._anchor_error = self._continuous(t_ns)
        sigma = self.model.params.frequency_change_noise_s
        if sigma and freq != self.correction:
            self.frequency_changes += 1
            self._anchor_error += rng.normal(self.model.seed, self.model.name, "freq-change",
                                             self.frequency_changes, sigma)
        self._anchor_integral = self.model.integrated(t_ns)
        self._anchor_ns = t_ns
        self.correction = freq

    def discipline(self) -> tuple[int, float, float, float, int]:
        """The corrections applied so far, as plain numbers another process can load.

        The free-running part is a pure function of (seed, true time); these
        five numbers are all a process needs to evaluate the disciplined clock.
        """
        return (
            self._anchor_ns,
            self._anchor_error,
            self._anchor_integral,
            self.correction,
            self.steps_ns,
        )

    def load_discipline(self, state: tuple[int, float, float, float, int]) -> None:
        """Take over :meth:`discipline` from another copy of the same world."""
        (
            self._anchor_ns,
            self._anchor_error,
            self._anchor_integral,
            self.correction,
            self.steps_ns,
        ) = state

    def step(self, offset_ns: int) -> None:
        """Move CLOCK_REALTIME by ``offset_ns`` (monotonic time is not affected)."""
        self.steps_ns += offset_ns

    def true_time_at_mono(self, mono_ns: int, hint_ns: int) -> int:
        """The first true instant (from ``hint_ns`` on) when CLOCK_MONOTONIC reads ``mono_ns``."""
        t = max(hint_ns, mono_ns - self.mono_epoch_ns - round(self._continuous(hint_ns) * NS_PER_S))
        for _ in range(8):  # Newton: the clock's rate is 1 within a fraction of a percent
            diff = mono_ns - self.mono_ns(t)
            if diff == 0:
                break
            t = max(hint_ns, t + diff)
        while self.mono_ns(t) < mono_ns:
            t += 1
        while t > hint_ns and self.mono_ns(t - 1) >= mono_ns:
            t -= 1
        return t
