"""Two-state Kalman filter arithmetic: offset and frequency of a reference against the local clock.

The state is ``x = (offset, frequency)`` in seconds and seconds per second, held
at a monotonic instant ``t_ns``. Time evolves as ``offset += frequency * dt``;
the process noise is a Wiener process on the frequency with spectral density
``wander`` ((s/s)^2 per s), so a prediction over ``dt`` adds
``wander * [[dt^3/3, dt^2/2], [dt^2/2, dt]]`` to the covariance. Splitting one
prediction into two gives exactly the same result, which is why a known
control input (a step or a frequency change applied between measurements) can
be folded into the state at any time.

Plain floats instead of a matrix library: the matrices are 2x2, and the per-
sample cost matters for the simulator (thousands of updates per second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Kalman2", "Prediction", "chi1_tail", "merge"]

_TINY = 1e-30  # smallest variance used in a division


def chi1_tail(chi_squared: float) -> float:
    """P(X >= chi_squared) for X chi-squared with one degree of freedom."""
    if chi_squared <= 0.0:
        return 1.0
    return math.erfc(math.sqrt(chi_squared / 2.0))


@dataclass(frozen=True, slots=True)
class Prediction:
    """A state and covariance at one instant (read-only copy)."""

    t_ns: int
    offset: float
    freq: float
    p00: float
    p01: float
    p11: float

    @property
    def offset_sigma(self) -> float:
        return math.sqrt(max(self.p00, 0.0))

    @property
    def freq_sigma(self) -> float:
        return math.sqrt(max(self.p11, 0.0))


@dataclass(slots=True)
class Kalman2:
    """Mutable (offset, frequency) filter state."""

    t_ns: int
    offset: float
    freq: float
    p00: float
    p01: float
    p11: float

    def predicted(self, t_ns: int, wander: float) -> Prediction:
        """The state propagated to ``t_ns`` (never backwards), without changing the filter."""
        dt = max(t_ns - self.t_ns, 0) * 1e-9
        p00 = self.p00 + 2.0 * dt * self.p01 + dt * dt * self.p11 + wander * dt**3 / 3.0
        p01 = self.p01 + dt * self.p11 + wander * dt * dt / 2.0
        p11 = self.p11 + wander * dt
        return Prediction(
            max(t_ns, self.t_ns), self.offset + self.freq * dt, self.freq, p00, p01, p11
        )

    def predict(self, t_ns: int, wander: float) -> None:
        """Move the state forward to ``t_ns`` (a no-op for an earlier instant)."""
        if t_ns <= self.t_ns:
            return
        p = self.predicted(t_ns, wander)
        self.t_ns, self.offset, self.freq = p.t_ns, p.offset, p.freq
        self.p00, self.p01, self.p11 = p.p00, p.p01, p.p11

    def update(self, z: float, r: float, lag_s: float = 0.0) -> tuple[float, float]:
        """Absorb one offset measurement ``z`` with variance ``r``.

        ``lag_s`` (<= 0) is how long before the state's instant the measurement
        was taken; the model is then ``z = offset + lag_s * freq``. Returns the
        innovation and its variance.
        """
        h = lag_s
        a = self.p00 + h * self.p01
        b = self.p01 + h * self.p11
        s = max(a + h * b + r, _TINY)
        nu = z - (self.offset + h * self.freq)
        self.offset += a / s * nu
        self.freq += b / s * nu
        self.p00 = max(self.p00 - a * a / s, 0.0)
        self.p11 = max(self.p11 - b * b / s, 0.0)
        self.p01 -= a * b / s
        # Rounding must never leave a covariance that is not positive semidefinite.
        limit = math.sqrt(self.p00 * self.p11)
        self.p01 = min(max(self.p01, -limit), limit)
        return nu, s

    def shift(self, offset_change: float, freq_change: float, at_ns: int) -> None:
        """Fold in a known control input applied at ``at_ns``.

        ``offset_change`` is added to the offset at once (a step);
        ``freq_change`` is added to the frequency from ``at_ns`` on. The state
        stays at its own instant: the frequency change is written as the
        offset it would have made up to that instant, which is exact for every
        later prediction.
        """
        self.offset += offset_change - freq_change * (at_ns - self.t_ns) * 1e-9
        self.freq += freq_change

    def snapshot(self) -> Prediction:
        return Prediction(self.t_ns, self.offset, self.freq, self.p00, self.p01, self.p11)

    def is_sane(self, max_offset_s: float, max_freq: float) -> bool:
        values = (self.offset, self.freq, self.p00, self.p01, self.p11)
        return (
            all(math.isfinite(v) for v in values)
            and abs(self.offset) <= max_offset_s
            and abs(self.freq) <= max_freq
            and self.p00 <= max_offset_s**2
            and self.p11 <= max_freq**2
        )


def merge(a: Prediction, b: Prediction) -> Prediction:
    """Inverse-variance (Kalman) merge of two independent estimates of the same state."""
    s00, s01, s11 = a.p00 + b.p00, a.p01 + b.p01, a.p11 + b.p11
    det = s00 * s11 - s01 * s01
    if det <= _TINY * max(s00 * s11, _TINY) or not math.isfinite(det):
        # Degenerate (one estimate carries no frequency information): merge
        # the offsets alone and keep the better frequency.
        w = a.p00 / max(s00, _TINY)
        offset = a.offset + w * (b.offset - a.offset)
        better = a if a.p11 <= b.p11 else b
        return Prediction(a.t_ns, offset, better.freq, a.p00 * (1.0 - w), 0.0, better.p11)
    # K = A (A + B)^-1 ; x = xa + K (xb - xa) ; P = A - K A
    i00, i01, i11 = s11 / det, -s01 / det, s00 / det
    k00 = a.p00 * i00 + a.p01 * i01
    k01 = a.p00 * i01 + a.p01 * i11
    k10 = a.p01 * i00 + a.p11 * i01
    k11 = a.p01 * i01 + a.p11 * i11
    d0, d1 = b.offset - a.offset, b.freq - a.freq
    p00 = a.p00 - (k00 * a.p00 + k01 * a.p01)
    p01 = a.p01 - (k00 * a.p01 + k01 * a.p11)
    p11 = a.p11 - (k10 * a.p01 + k11 * a.p11)
    return Prediction(
        a.t_ns,
        a.offset + k00 * d0 + k01 * d1,
        a.freq + k10 * d0 + k11 * d1,
        max(p00, 0.0),
        p01,
        max(p11, 0.0),
    )
