"""Per-source filter: a Kalman filter of one source's offset and frequency against the local clock.

As in ntpd-rs (see :mod:`.kalman` for the model; the wander is estimated by
:mod:`.wander`), with these differences, each chosen because the simulator
showed it better:

* **Measurement noise of an NTP sample from its own delay.** The offset error
  of a two-way exchange is half the difference of the two one-way queueing
  delays, and it is bounded by half the round trip's excess over the path's
  minimum delay. For independent exponential queueing delays the error, given
  the excess ``E``, is uniform on ``[-E/2, E/2]``, so its variance is
  ``E^2/12``; averaged over samples this equals ntpd-rs's ``Var(delay)/4``, but
  per sample it weights a quick exchange far above a queued one. The minimum
  of the last 16 delays stands in for the path's minimum, which it
  overestimates; a quarter of the mean excess is added to cover that.
  In ntp-only (mean of 3 seeds) RMS 15.7 µs with ``Var(delay)/4``, 8.8 µs
  with this.
* **PHC noise from the sample** (``Sample.uncertainty_s``: the configured
  precision combined with the reading window), never zero.
* **Noise a PHC poll cannot show** (:class:`CommonNoise`): a poll's σ
  measured from the scatter of its readings misses an error all of them
  share. On the igb PHC of the QEMU guest ROBUST claimed 4 ns per poll while
  successive polls scattered by 23 ns (benchmarks/phc_sigma_check.py); the
  filter, trusting the 4 ns, read the scatter as clock wander and followed
  it. So the scatter between polls is measured too (second differences of
  the offsets, the steering undone), and once it is clearly larger than the
  polls' own σ say (over 4× in variance, a level 32 second differences do not
  reach by chance), the difference is added to every poll's variance as a
  common error. In the simulator the readings' errors are independent and
  this never triggers. When it first triggers, the wander learnt until then
  was fitted to the wrong noise (it had risen to explain the scatter: its
  square root 4× in kvm-guest-tcg's first 40 s) and goes back to its initial
  value; in that
  scenario's minute 2-3, the QEMU e2e's steady window, RMS 16.9 -> 14.2 ns
  (5 seeds), and the same after 30 min.
* **A start-up wander search** (PHC sources, :meth:`SourceFilter._search_wander`):
  when the common noise is learnt and every 32 polls up to 512, the last 256
  polls (unsteered) are filtered afresh under the wander in force times
  4^-8 ... 4^2; the likeliest is taken if it leads by a clear margin (of the
  candidates tied with it, the largest). kvm-guest-tcg with a near-constant
  clock (wander 1e-11, as the guest's), minute 2-3, 4 seeds: RMS 13.2 ->
  8.9 ns, frequency error 8.4 -> 3.2 ppb; with the scenario's 1e-9 wander
  13.9 -> 13.6 ns; every scenario's 30-minute figures the same or better.
* **Start-up** keeps the first few samples (4 for NTP, 3 for a PHC: ntpd-rs
  waits for 8 to estimate a delay variance, which this noise model does not
  need) and then runs the filter over them with the noise computed from all of
  them, so the source is usable within seconds of an iburst.
* **Jumps**: an innovation beyond 10 sigma is rejected; three in a row mean the
  source (or our clock) really moved, and the filter restarts from them.

Steering done by clock-control is folded into the state (:meth:`steer`), as
ntpd-rs's ``process_offset_steering``/``process_frequency_steering`` do.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from .config import AlgorithmConfig
from .events import Sample, SourceKind
from .kalman import Kalman2, Prediction, chi1_tail
from .saved_state import SavedFilter
from .wander import WanderBank, window_likelihoods

__all__ = ["FilterResult", "SourceFilter", "measurement_variance"]

STARTUP_SAMPLES = {SourceKind.NTP: 4, SourceKind.PTP: 3, SourceKind.SOCK: 3, SourceKind.PPS: 3}
DELAY_WINDOW = 16
NTP_EXCESS_BIAS = 0.25  # fraction of the mean delay excess added to every sample's excess
NTP_NOISE_FLOOR_S = 1e-7  # timestamping noise of an NTP exchange
PHC_DEFAULT_PRECISION_S = 1e-9  # used when a PHC sample claims zero uncertainty
JUMP_SIGMA = 10.0
JUMP_MIN_S = 1e-6
JUMP_CONFIRM = 3
MAX_OFFSET_S = 4e9  # beyond the NTP era: nonsense
MAX_DELAY_S = 16.0  # no network round trip (or PHC reading) takes longer
MAX_FREQ = 0.01  # 10000 ppm: no clock is that bad
WANDER_LIMITS = (1e-26, 1e-10)
MAX_UNCERTAINTY_S = 1e6


@dataclass(frozen=True, slots=True)
class FilterResult:
    """What happened to one sample: used or not (and why), and a new desired poll interval."""

    accepted: bool
    reason: str = ""
    poll_log2: int | None = None


def measurement_variance(
    kind: SourceKind, delay_s: float, uncertainty_s: float, delays: list[float]
) -> float:
    """Variance of one sample's offset (see the module docstring for the model)."""
    unc = min(uncertainty_s, MAX_UNCERTAINTY_S)
    if kind is not SourceKind.NTP:  # one-way (PHC, sock, PPS): the configured precision
        sigma = unc if unc > 0.0 else PHC_DEFAULT_PRECISION_S
        return max(sigma, 1e-11) ** 2
    base = min(delays) if delays else delay_s
    mean_excess = sum(d - base for d in delays) / len(delays) if delays else 0.0
    excess = max(delay_s - base, 0.0) + NTP_EXCESS_BIAS * mean_excess
    excess = min(excess, MAX_UNCERTAINTY_S)
    return excess * excess / 12.0 + NTP_NOISE_FLOOR_S**2 + unc * unc


COMMON_WINDOW = 64  # second differences kept to judge the between-poll scatter
COMMON_MIN = 32  # ... and needed before any judgement
COMMON_RATIO = 4.0  # observed / claimed variance beyond which the claim is wrong
SEARCH_WINDOW = 256  # PHC polls the start-up wander search fits (see SourceFilter._search_wander)
SEARCH_EVERY = 32  # ... every this many polls
SEARCH_UNTIL = 512  # ... up to this many (and when the common noise is learnt)
SEARCH_BURN_IN = 8
SEARCH_TIE = 2.0  # log-likelihood: candidates this close to the likeliest count as tied
SEARCH_MARGIN = 3.0  # log-likelihood lead needed, as the bank's
SEARCH_STEPS = range(-8, 3)  # candidates: the wander in force times 4**k
_MEDIAN_CHI1 = 0.4549  # median of a chi-squared variable with one degree of freedom


class CommonNoise:
    """The part of a PHC's poll-to-poll scatter that its per-poll σ does not show.

    Offsets are taken back to an unsteered frame (every step and frequency
    change clock-control made is added back), where over a few seconds they
    lie on a line; the second difference of three consecutive ones removes the
    line, and its variance, divided by what the claimed variances predict,
    says whether they are right. Medians, so a jump or a delayed poll does
    not count.
    """

    def __init__(self) -> None:
        self.ctl_off = 0.0  # the offset steering has added, at ctl_t_ns
        self.ctl_freq = 0.0
        self.ctl_t_ns: int | None = None
        self.points: deque[tuple[int, float, float]] = deque(maxlen=3)  # (t, u, variance)
        self.observed: deque[float] = deque(maxlen=COMMON_WINDOW)  # d2² / k
        self.claimed: deque[float] = deque(maxlen=COMMON_WINDOW)  # predicted d2² / k
        self.extra_var = 0.0
        # (t, offset unsteered, claimed variance): the window the wander search fits
        self.history: deque[tuple[int, float, float]] = deque(maxlen=SEARCH_WINDOW)

    def clear(self) -> None:
        self.history.clear()
        self.points.clear()
        self.observed.clear()
        self.claimed.clear()
        self.extra_var = 0.0

    def _control(self, t_ns: int) -> float:
        if self.ctl_t_ns is None:
            return self.ctl_off
        return self.ctl_off + self.ctl_freq * (t_ns - self.ctl_t_ns) * 1e-9

    def shift(self, step_s: float, freq_change: float, at_ns: int) -> None:
        """The local clock was stepped by ``step_s`` and/or sped up by ``freq_change``."""
        self.ctl_off = self._control(at_ns) + step_s
        self.ctl_t_ns = at_ns
        self.ctl_freq += freq_change

    def observe(self, t_ns: int, offset_s: float, variance: float) -> None:
        """One accepted sample's offset (reference - local) and claimed variance."""
        self.points.append((t_ns, offset_s + self._control(t_ns), variance))
        self.history.append(self.points[-1])
        if len(self.points) < 3:
            return
        (ta, ua, va), (tb, ub, vb), (tc, uc, vc) = self.points
        if not ta < tb < tc:
            return
        w = (tb - ta) / (tc - ta)
        k = 1.0 + (1.0 - w) ** 2 + w * w
        d2 = ub - ((1.0 - w) * ua + w * uc)
        self.observed.append(d2 * d2 / k)
        self.claimed.append((vb + (1.0 - w) ** 2 * va + w * w * vc) / k)
        if len(self.observed) < COMMON_MIN:
            return
        seen = statistics.median(self.observed) / _MEDIAN_CHI1
        claimed = statistics.median(self.claimed)
        self.extra_var = seen - claimed if seen > COMMON_RATIO * claimed else 0.0


# A startup/suspect record: ("s", t_ns, offset, delay, uncertainty) or ("c", t_ns, step, dfreq)
_Event = tuple[str, int, float, float, float]


def _append_control(events: list[_Event], at_ns: int, step_s: float, freq_change: float) -> None:
    """Record steering; consecutive records merge into one, so the list stays short."""
    if events and events[-1][0] == "c":
        _, t1, s1, d1, _ = events[-1]
        events[-1] = ("c", at_ns, s1 + step_s + d1 * (at_ns - t1) * 1e-9, d1 + freq_change, 0.0)
    else:
        events.append(("c", at_ns, step_s, freq_change, 0.0))


class SourceFilter:
    """Filter state of one source; time is monotonic nanoseconds."""

    def __init__(
        self,
        kind: SourceKind,
        algo: AlgorithmConfig,
        *,
        poll_log2: int,
        poll_limits: tuple[int, int],
        freq_prior: tuple[float, float] | None = None,
    ) -> None:
        self.kind = kind
        self.algo = algo
        self.poll_limits = poll_limits
        self.desired_poll = min(max(poll_log2, poll_limits[0]), poll_limits[1])
        self.freq_prior = freq_prior or (0.0, algo.initial_frequency_uncertainty)
        self.startup_samples = STARTUP_SAMPLES[kind]
        self.kalman: Kalman2 | None = None
        self.wander = algo.initial_wander**2
        self.delays: deque[float] = deque(maxlen=DELAY_WINDOW)
        self.pending: list[_Event] = []  # start-up samples and steering, in order
        self.suspect: list[_Event] = []  # consecutive jump candidates
        self.bank = WanderBank(WANDER_LIMITS)
        self.common = CommonNoise()
        self.poll_score = 0
        self.prev_was_outlier = False
        self.samples = 0
        self.last_sample_mono_ns: int | None = None
        self.last_offset = 0.0
        self.last_delay = 0.0

    # -- queries -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.kalman is not None

    def estimate(self, now_ns: int) -> Prediction | None:
        return None if self.kalman is None else self.kalman.predicted(now_ns, self.wander)

    def mean_delay(self) -> float:
        return sum(self.delays) / len(self.delays) if self.delays else self.last_delay

    # -- input -------------------------------------------------------------------

    def add_sample(self, sample: Sample) -> FilterResult:
        """Absorb one sample (already validated by :class:`Sample`)."""
        t = sample.mono_ns
        if abs(sample.offset_s) > MAX_OFFSET_S:
            return FilterResult(False, "offset beyond any plausible clock error")
        if sample.delay_s > MAX_DELAY_S:
            return FilterResult(False, "delay beyond any plausible round trip")
        if self.last_sample_mono_ns is not None and t < self.last_sample_mono_ns:
            return FilterResult(False, "older than the previous sample")
        if self._delay_outlier(sample.delay_s):
            return FilterResult(False, "delay outlier")
        period = None if self.last_sample_mono_ns is None else (t - self.last_sample_mono_ns) * 1e-9
        self.last_sample_mono_ns = t
        self.last_offset, self.last_delay = sample.offset_s, sample.delay_s
        self.delays.append(sample.delay_s)
        self.samples += 1
        event: _Event = ("s", t, sample.offset_s, sample.delay_s, sample.uncertainty_s)
        if self.kalman is None:
            self.pending.append(event)
            if sum(1 for e in self.pending if e[0] == "s") >= self.startup_samples:
                self._replay(self.pending)
                self.pending = []
            return FilterResult(True)
        return self._absorb(event, period)

    def steer(self, step_s: float, freq_change: float, at_ns: int) -> None:
        """Clock-control moved the local clock: by ``step_s`` (forward) and/or sped it up.

        ``freq_change`` is the change of the local clock's frequency correction
        (s/s, kernel sign) from ``at_ns`` on. The reference minus local offset
        falls by both.
        """
        self.common.shift(step_s, freq_change, at_ns)
        if self.kalman is not None:
            self.kalman.shift(-step_s, -freq_change, at_ns)
            self.bank.shift(-step_s, -freq_change, at_ns)
        elif self.pending:  # only needed once there is a sample to replay it against
            _append_control(self.pending, at_ns, step_s, freq_change)
        if self.suspect:
            _append_control(self.suspect, at_ns, step_s, freq_change)

    def reset(self) -> None:
        """Forget every measurement (the clock was stepped underneath us)."""
        self.kalman = None
        self.pending, self.suspect = [], []
        self.delays.clear()
        self.bank.clear()
        self.common.clear()
        self.poll_score = 0
        self.prev_was_outlier = False
        self.last_sample_mono_ns = None

    # -- internals ---------------------------------------------------------------

    def _delay_outlier(self, delay: float) -> bool:
        if self.kind is not SourceKind.NTP or len(self.delays) < 4 or self.prev_was_outlier:
            self.prev_was_outlier = False
            return False
        mean = sum(self.delays) / len(self.delays)
        var = sum((d - mean) ** 2 for d in self.delays) / (len(self.delays) - 1)
        limit = mean + self.algo.delay_outlier_threshold * max(math.sqrt(var), 1e-6)
        self.prev_was_outlier = delay > limit
        return self.prev_was_outlier

    def _variance(self, delay: float, uncertainty: float) -> float:
        var = measurement_variance(self.kind, delay, uncertainty, list(self.delays))
        return var + self.common.extra_var if self.kind is SourceKind.PTP else var

    def _replay(self, events: list[_Event]) -> None:
        """Start the filter from buffered samples, noise judged from all their delays."""
        kalman: Kalman2 | None = None
        for kind, t, a, b, c in events:
            if kind == "c":
                if kalman is not None:
                    kalman.shift(-a, -b, t)
                continue
            r = self._variance(b, c)
            if kalman is None:
                freq, sigma = self.freq_prior
                kalman = Kalman2(t, a, freq, r, 0.0, sigma * sigma)
            else:
                kalman.predict(t, self.wander)
                kalman.update(a, r)
        self.kalman = kalman
        self.suspect = []
        if kalman is not None and not kalman.is_sane(MAX_OFFSET_S, MAX_FREQ):
            self.reset()
        elif kalman is not None:
            self.bank.start(kalman, self.wander)

    def _absorb(self, event: _Event, period: float | None) -> FilterResult:
        assert self.kalman is not None
        _, t, z, delay, unc = event
        r = self._variance(delay, unc)
        pred = self.kalman.predicted(t, self.wander)
        s = pred.p00 + r
        nu = z - pred.offset
        if abs(nu) > max(JUMP_SIGMA * math.sqrt(s), JUMP_MIN_S):
            return self._jump(event)
        self.suspect = []
        if self.kind is SourceKind.PTP:
            had_common = self.common.extra_var > 0.0
            self.common.observe(t, z, r - self.common.extra_var)
            r = self._variance(delay, unc)
            if not had_common and self.common.extra_var > 0.0:
                self._noise_model_corrected()
                self._search_wander()
            elif self.samples <= SEARCH_UNTIL and self.samples % SEARCH_EVERY == 0:
                self._search_wander()
        self.kalman.predict(t, self.wander)
        nu, s = self.kalman.update(z, r)
        if not self.kalman.is_sane(MAX_OFFSET_S, MAX_FREQ):
            self.reset()
            return FilterResult(False, "filter diverged; restarting")
        p = chi1_tail(nu * nu / s)
        weight = 1.0 - r / s
        switch = self.bank.observe(t, z, r, nu, s, self.wander)
        if switch is not None:
            self.wander, self.kalman = switch.wander, switch.state
        old_poll = self.desired_poll
        if self.kind is SourceKind.NTP:
            self._adapt_poll(p, weight, period)
        return FilterResult(
            True, poll_log2=self.desired_poll if self.desired_poll != old_poll else None
        )

    def _noise_model_corrected(self) -> None:
        """The polls turned out noisier than they claimed: the wander learnt so far
        absorbed that unexplained scatter, so it goes back to where it started."""
        assert self.kalman is not None
        start = self.algo.initial_wander ** 2
        if self.wander > start:
            self.wander = start
            self.bank.start(self.kalman, start)

    def _search_wander(self) -> None:
        """Fit the wander to the window of recent polls at once (PHC sources).

        The bank (:mod:`.wander`) moves the wander 4x at a time and needs
        dozens of polls per move, because its shadows start from the main
        filter's state and their likelihoods part slowly. At start-up that left
        the wander far above the truth for minutes (kvm-guest-tcg with a
        near-constant clock: 2.5e-9 at minute 2, RMS 13.7 ns, against 3.9-6 ns
        had it started at the truth). So a few times early on the last polls,
        taken back to an unsteered frame, are filtered from scratch under a
        range of wanders, and the likeliest is taken if it explains them
        clearly better than the one in force.
        """
        points = self.common.history
        if self.kalman is None or len(points) < 4 * SEARCH_BURN_IN:
            return
        extra = self.common.extra_var
        window = [(t, u, r + extra) for t, u, r in points]
        low, high = WANDER_LIMITS
        wanders = sorted({min(max(self.wander * 4.0**k, low), high) for k in SEARCH_STEPS})
        scores = window_likelihoods(window, wanders, self.algo.initial_frequency_uncertainty,
                                    SEARCH_BURN_IN)
        top = max(scores)
        # The likelihood is flat below the truth; of the wanders the window
        # cannot tell apart from the likeliest, the largest (the safest) is taken.
        best = max(i for i in range(len(wanders)) if scores[i] >= top - SEARCH_TIE)
        current = scores[wanders.index(self.wander)] if self.wander in wanders else -math.inf
        if wanders[best] != self.wander and scores[best] - current >= SEARCH_MARGIN:
            self.wander = wanders[best]
            self.bank.start(self.kalman, self.wander)

    def _jump(self, event: _Event) -> FilterResult:
        self.suspect.append(event)
        if sum(1 for e in self.suspect if e[0] == "s") < JUMP_CONFIRM:
            return FilterResult(False, "offset jump (waiting for confirmation)")
        assert self.kalman is not None
        # Keep the frequency knowledge, loosened; the offset restarts from the jump.
        freq_sigma = max(math.sqrt(self.kalman.p11), self.algo.initial_frequency_uncertainty / 10)
        self.freq_prior = (self.kalman.freq, freq_sigma)
        events, self.kalman = self.suspect, None
        self._replay(events)
        poll = self.poll_limits[0] if self.kind is SourceKind.NTP else None
        if poll is not None and poll != self.desired_poll:
            self.desired_poll = poll
            return FilterResult(True, "offset jump confirmed: filter restarted", poll)
        return FilterResult(True, "offset jump confirmed: filter restarted")

    def _adapt_poll(self, p: float, weight: float, period: float | None) -> None:
        algo = self.algo
        wanted = 2.0**self.desired_poll
        ratio = 1.0 if period is None else period / wanted
        if weight < algo.poll_interval_low_weight and ratio > 0.75:
            self.poll_score -= 1
        elif weight > algo.poll_interval_high_weight and ratio < 1.4:
            self.poll_score += 1
        else:
            self.poll_score -= (self.poll_score > 0) - (self.poll_score < 0)
        low, high = self.poll_limits
        if p <= algo.poll_interval_step_threshold:
            self.desired_poll, self.poll_score = low, 0
        elif self.poll_score <= -algo.poll_interval_hysteresis:
            self.desired_poll, self.poll_score = min(self.desired_poll + 1, high), 0
        elif self.poll_score >= algo.poll_interval_hysteresis:
            self.desired_poll, self.poll_score = max(self.desired_poll - 1, low), 0

    # -- persistence -------------------------------------------------------------

    def to_saved(self) -> SavedFilter | None:
        """This filter for the quick-restart snapshot; None before its first estimate."""
        k = self.kalman
        if k is None:
            return None
        return SavedFilter(str(self.kind), (k.t_ns, k.offset, k.freq, k.p00, k.p01, k.p11),
                           self.wander, tuple(self.delays), self.desired_poll, self.samples)

    def restore(self, saved: SavedFilter, now_ns: int) -> bool:
        """Take over a filter exported earlier; False (and nothing changed) if unusable."""
        if saved.kind != str(self.kind):
            return False
        kalman = Kalman2(*saved.kalman)
        wander, samples = saved.wander, saved.samples
        delays = list(saved.delays)[-DELAY_WINDOW:]
        poll = saved.desired_poll
        if kalman.t_ns > now_ns or not kalman.is_sane(MAX_OFFSET_S, MAX_FREQ):
            return False
        if not (WANDER_LIMITS[0] <= wander <= WANDER_LIMITS[1]) or any(
            not math.isfinite(d) or d < 0 for d in delays
        ):
            return False
        self.kalman, self.wander, self.samples = kalman, wander, samples
        self.bank.start(kalman, wander)
        self.delays.extend(delays)
        self.desired_poll = min(max(poll, self.poll_limits[0]), self.poll_limits[1])
        self.last_sample_mono_ns = kalman.t_ns
        return True
