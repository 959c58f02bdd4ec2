"""Steering: turn the combined estimate into a frequency, a slew, or (rarely) a step.

On every update the frequency correction is set so that the estimated
frequency error is gone (``base``), and the estimated offset is slewed away by
adding ``offset / duration`` to it for ``duration``, bounded by
``slew-maximum-frequency-offset`` and a total of ``maximum-frequency-steer``.
An offset beyond ``step-threshold`` is stepped instead, but only within the
panic thresholds (``startup-step-panic-threshold`` before the first
correction, ``single-step-panic-threshold`` and
``accumulated-step-panic-threshold`` after); beyond them the decision is a
panic: nothing is changed and the daemon must exit (70) with the message.

Deviation from ntpd-rs, measured with the simulator: ntpd-rs leaves offsets
under 2 sigma alone, corrects the rest down to 1 sigma, and slews over at
least ``slew-minimum-duration`` (8 s). Because the filters account for every
correction exactly, the combined estimate is already the best guess of the
true offset, and any part of it left uncorrected adds to the error. So the
full estimate is corrected; the ``steer-*-threshold`` and ``steer-*-leftover``
keys are therefore accepted but not used.

How fast (:func:`plan_slew`): the whole estimate is turned into one frequency
offset held until the next sample of the sources in use, PLL-like, never a
short burst. The slew lasts the longer of the time until the next expected
sample and the shortest poll interval of the sources combined (when neither
is known: a quarter of the interval between updates). Several NTP sources
polled every 64 s update the estimate every few seconds; slewing each
estimate away by the next of those updates made the rate jumpy (in
ntp-only, 12 ppm peaks and 2 % of the seconds beyond 1 ppm); spread over the
poll interval, the estimate's noise moves the rate a poll interval's worth
less, and each update re-plans what is left (ntp-only, 5 seeds: RMS
frequency error 0.43 -> 0.062 ppm, max 12.5 -> 0.28 ppm, RMS offset 8.13 ->
8.23 µs; half the poll interval gave 0.096 ppm / 8.15 µs, twice 0.045 ppm /
8.41 µs). When the shortest poll interval in use is at most
:data:`SHORT_POLL_S` (PHC sources), the slew still lasts until the next
sample (at most ``slew-minimum-duration``), even when an NTP sample between
two PHC samples makes that shorter than the poll interval: those estimates
are good to tens of nanoseconds, so the rate moves by a few ppb at most
(aws-ena: max 0.05 ppm), and holding such slews to the poll interval cost
aws-ena 3 % of RMS offset (75.5 against 73.0 ns). The rate is bounded by
``max-slew-rate-ppm`` (``[synchronization]``, like chrony's ``maxslewrate``) and by
``slew-maximum-frequency-offset``; an offset that needs more is slewed at
that bound for as long as it takes.

With long polls (above :data:`SHORT_POLL_S`: NTP) an estimate within
:data:`NOISE_SIGMAS` of its own sigma is mostly noise, and is spread over
longer: the time over which the frequency's uncertainty adds as much offset
as the estimate's own (``offset_sigma / freq_sigma``: while the frequency is
still poorly known, at start-up, that is short), but at most
:data:`NOISE_MAX_POLLS` poll intervals, so a real change of offset is
followed. In steady state the bound holds (the noise time is 12-45 poll
intervals) and nearly every estimate is within 1 sigma; offsets beyond
3 sigma (start-up, a server's step) keep the poll interval. Measured
(5 seeds, docs/steering.md), with ``ntp-lan-3h`` (issue 18's NTP setting)
and the same with gamma and with spiky delays: frequency-error RMS 0.093 ->
0.049 ppm (gamma 0.150 -> 0.075, max 1.6 -> 0.46 ppm; spiky 0.091 -> 0.049)
for an RMS offset of 8.87 -> 9.02 µs; ntp-only 0.062 -> 0.035 ppm, 8.23 ->
8.86 µs. Chrony's comparable knob (``corrtimeratio``) is 3; 3 left the gamma
model at 0.085 ppm, 5 costs ntp-only another 0.3 µs.

The next update normally re-plans the slew before it ends, so the slew's own
end is only a fallback, set half a slew later, for a sample that does not
come; clock-control is not woken up in between. A slew held at the rate
bound ends exactly when the offset is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import StepThreshold, SynchronizationConfig
from .exit_codes import EX_SOFTWARE
from .units import NS_PER_S

__all__ = ["EXIT_PANIC", "SlewPlan", "SteerDecision", "Steerer", "plan_slew"]

EXIT_PANIC = EX_SOFTWARE  # as ntpd-rs
# At or below this poll interval (PHC sources) a slew lasts just until the next sample.
SHORT_POLL_S = 2.0
MIN_SLEW_S = 1e-3
# Long polls (NTP): an estimate within this many of its own sigmas is mostly noise ...
NOISE_SIGMAS = 3.0
# ... and is slewed over the filter's noise time, but over at most this many poll intervals.
NOISE_MAX_POLLS = 4.0  # shortest slew ever planned, whatever the intervals say


@dataclass(frozen=True, slots=True)
class SlewPlan:
    rate: float  # frequency offset (s/s), same sign as the offset; 0.0: nothing to slew
    duration_s: float  # how long ``rate`` removes the offset (0.0 with rate 0.0)
    rate_limited: bool  # the rate is at ``max_rate``: the slew lasts longer than planned


def plan_slew(offset_s: float, wanted_s: float, max_rate: float) -> SlewPlan:
    """The slew that removes ``offset_s`` in ``wanted_s`` seconds, at most ``max_rate``.

    Never faster than needed to be done in ``wanted_s`` (at least
    :data:`MIN_SLEW_S`); when that would exceed ``max_rate`` the offset is
    slewed at ``max_rate`` for as long as it takes.
    """
    if offset_s == 0.0 or max_rate <= 0.0:
        return SlewPlan(0.0, 0.0, False)
    wanted_s = max(wanted_s, MIN_SLEW_S)
    speed = abs(offset_s) / wanted_s
    limited = speed > max_rate
    if limited:
        speed = max_rate
    return SlewPlan(math.copysign(speed, offset_s), abs(offset_s) / speed, limited)


@dataclass(frozen=True, slots=True)
class SteerDecision:
    step_s: float  # 0.0: no step
    freq: float  # the total frequency correction to be in force from now on
    slew_end_ns: int | None
    panic: str | None = None


def _limit_text(threshold: StepThreshold, step_s: float) -> str:
    limit = threshold.forward if step_s >= 0 else threshold.backward
    direction = "forward" if step_s >= 0 else "backward"
    return f"{direction} limit {limit:g} s"


class Steerer:
    """Steering state: frequency in force, slew in progress, steps taken."""

    def __init__(self, sync: SynchronizationConfig, *, freq: float = 0.0) -> None:
        self.sync = sync
        self.algo = sync.algorithm
        self.base_freq = self._clamp(freq)
        self.freq_in_force = self.base_freq
        self.slew_end_ns: int | None = None
        self.in_startup = True
        self.steps = 0
        self.accumulated_s = 0.0
        self.last_update_ns: int | None = None
        self.update_interval_s: float | None = None

    def _clamp(self, freq: float) -> float:
        limit = self.algo.maximum_frequency_steer
        return min(max(freq, -limit), limit)

    def update(self, offset_s: float, slope: float, now_ns: int,
               next_update_ns: int | None = None,
               poll_interval_s: float | None = None,
               offset_sigma_s: float | None = None,
               freq_sigma: float | None = None) -> SteerDecision:
        """Decide on a combined estimate: ``offset_s`` = reference - local, ``slope`` its rate.

        ``slope`` is measured with :attr:`freq_in_force` in force. ``next_update_ns``
        is when the next sample is expected, ``poll_interval_s`` the shortest poll
        interval of the sources combined (None: not known); ``offset_sigma_s`` and
        ``freq_sigma`` the estimate's 1 sigma (None: not known).
        """
        self._note_interval(now_ns)
        base = self._clamp(self.freq_in_force + slope)
        if abs(offset_s) > self.algo.step_threshold:
            panic = self._panic_reason(offset_s)
            if panic is not None:
                return SteerDecision(0.0, self.freq_in_force, self.slew_end_ns, panic)
            self.steps += 1
            self.accumulated_s += abs(offset_s)
            self.in_startup = False
            self.base_freq = self.freq_in_force = base
            self.slew_end_ns = None
            return SteerDecision(offset_s, base, None)
        self.in_startup = False
        self.base_freq = base
        total, end = self._slew(offset_s, base, now_ns, next_update_ns, poll_interval_s,
                                offset_sigma_s, freq_sigma)
        self.freq_in_force, self.slew_end_ns = total, end
        return SteerDecision(0.0, total, end)

    def end_slew(self, now_ns: int) -> float | None:
        """At the slew's end: the frequency to set (None if no slew is due to end)."""
        if self.slew_end_ns is None or now_ns < self.slew_end_ns:
            return None
        self.slew_end_ns = None
        self.freq_in_force = self.base_freq
        return self.base_freq

    def _note_interval(self, now_ns: int) -> None:
        if self.last_update_ns is not None and now_ns > self.last_update_ns:
            interval = (now_ns - self.last_update_ns) / NS_PER_S
            previous = self.update_interval_s
            self.update_interval_s = (
                interval if previous is None else 0.75 * previous + 0.25 * interval
            )
        self.last_update_ns = now_ns

    @property
    def max_slew_rate(self) -> float:
        """The fastest slew allowed (s/s): the smaller of the two configured bounds."""
        return min(self.sync.max_slew_rate_ppm * 1e-6, self.algo.slew_maximum_frequency_offset)

    def _slew_duration_s(self, now_ns: int, next_update_ns: int | None,
                         poll_interval_s: float | None, offset_s: float = 0.0,
                         offset_sigma_s: float | None = None,
                         freq_sigma: float | None = None) -> tuple[float, bool]:
        """How long to slew, and whether a sample is expected by then (re-planning it)."""
        until_next = None
        if next_update_ns is not None and next_update_ns > now_ns:
            until_next = (next_update_ns - now_ns) / NS_PER_S
        if poll_interval_s is not None and poll_interval_s <= SHORT_POLL_S:
            if until_next is not None:
                return min(until_next, self.algo.slew_minimum_duration), True
            poll_interval_s = None
        known = [d for d in (until_next, poll_interval_s) if d is not None and d > 0.0]
        if known:
            return max(max(known), self._noise_time_s(offset_s, offset_sigma_s, freq_sigma,
                                                      max(known))), True
        if self.update_interval_s is not None:
            return self.update_interval_s / 4.0, False
        return self.algo.slew_minimum_duration, False

    @staticmethod
    def _noise_time_s(offset_s: float, offset_sigma_s: float | None,
                      freq_sigma: float | None, poll_s: float) -> float:
        """How long an estimate that is mostly noise is spread over (0.0: not such one).

        ``offset_sigma / freq_sigma`` is the time over which the frequency's
        uncertainty adds as much offset as the estimate's own: slewing faster
        moves the rate more than the frequency is known. Bounded by
        :data:`NOISE_MAX_POLLS` poll intervals so that a real change of offset
        (wander) is still followed.
        """
        if offset_sigma_s is None or freq_sigma is None or freq_sigma <= 0.0:
            return 0.0
        if abs(offset_s) > NOISE_SIGMAS * offset_sigma_s:
            return 0.0
        return min(offset_sigma_s / freq_sigma, NOISE_MAX_POLLS * poll_s)

    def _slew(self, offset_s: float, base: float, now_ns: int,
              next_update_ns: int | None, poll_interval_s: float | None,
              offset_sigma_s: float | None = None, freq_sigma: float | None = None
              ) -> tuple[float, int | None]:
        wanted, replanned = self._slew_duration_s(now_ns, next_update_ns, poll_interval_s,
                                                  offset_s, offset_sigma_s, freq_sigma)
        plan = plan_slew(offset_s, wanted, self.max_slew_rate)
        unclamped = base + plan.rate
        total = self._clamp(unclamped)
        actual = total - base
        if plan.rate == 0.0 or actual == 0.0 or (actual > 0) != (offset_s > 0):
            return base, None
        duration_ns = max(int(offset_s / actual * NS_PER_S), 1)
        if replanned and not plan.rate_limited and total == unclamped:
            # The next update re-plans the slew before (or just as) it completes; its
            # end is only a fallback for an update that does not come, half a slew later.
            return total, now_ns + duration_ns + duration_ns // 2
        return total, now_ns + duration_ns

    def _panic_reason(self, offset_s: float) -> str | None:
        sync = self.sync
        if self.in_startup:
            checks = [(sync.startup_step_panic_threshold, "startup-step-panic-threshold")]
        else:
            checks = [(sync.single_step_panic_threshold, "single-step-panic-threshold")]
        for threshold, key in checks:
            if not threshold.allows(offset_s):
                return self._panic_text(
                    offset_s, f"{key} ({_limit_text(threshold, offset_s)})", key
                )
        limit = sync.accumulated_step_panic_threshold
        if not self.in_startup and limit is not None and self.accumulated_s + abs(offset_s) > limit:
            what = (
                f"accumulated-step-panic-threshold ({limit:g} s; "
                f"{self.accumulated_s:g} s stepped already)"
            )
            return self._panic_text(offset_s, what, "accumulated-step-panic-threshold")
        return None

    @staticmethod
    def _panic_text(offset_s: float, what: str, key: str) -> str:
        return (
            f"refusing to step the clock by {offset_s:+.6f} s: beyond the {what}. "
            "The clock was not changed. Check the sources and set the clock by hand "
            "(for example `chronyd -q 'server <ntp-server> iburst'`), or raise "
            f"[synchronization] {key} in the configuration, then start ntpd-py again."
        )
