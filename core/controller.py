"""The clock algorithm as one sans-IO object: samples and time in, clock actions out.

The clock-control process calls :meth:`ClockController.handle_sample` for
every sample, :meth:`~ClockController.handle_timer` at
:meth:`~ClockController.next_timer_mono_ns`, and carries out the returned
actions in order. Every action returned is assumed to be carried out at the
``now`` of the call that returned it: the per-source filters already account
for it. Per update: filter the sample (:mod:`.filter`), judge every source,
select the agreeing ones (:mod:`.select`), combine them (:mod:`.combine`),
steer (:mod:`.steer`), and keep the kernel's error estimates, synchronized
flag and leap flag (:mod:`.leap`) current.

A jump of realtime against monotonic time between two calls (beyond
``meddling-threshold``, apart from our own steps and an armed leap second)
means someone else stepped the clock: every filter restarts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .actions import (
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
from .combine import Combined, SourceEstimate, combine
from .config import SynchronizationConfig
from .controller_state import (
    DriftPrior,
    SavedFilter,
    SavedState,
    SourceState,
    StateError,
    StepBounds,
    finite_number,
    restore_frequency,
    restore_sources,
    restore_steering,
    saved_bounds,
    validate_saved_state,
)
from .events import LeapIndicator, Sample, SourceKind
from .filter import SourceFilter
from .leap import leap_to_arm, next_leap_change_ns
from .select import Candidate, select
from .snapshots import SelectionState, SourceSnapshot, SystemSnapshot
from .steer import Steerer
from .units import NS_PER_S
from .worker_spec import nts_pool_member

__all__ = ["ClockController"]

DRIFT_PRIOR_FLOOR = 1e-6  # a saved frequency is trusted to 1 ppm at best
SYNC_TIMEOUT_POLLS = 8  # unsynchronized after this many of the longest poll intervals ...
SYNC_TIMEOUT_MIN_S = 16  # ... but never sooner than this
# An nts-pool member on a counted server is sent off to another at most this often.
SEEK_SERVER_INTERVAL_S = 1024
_DRIFT_KEYS = frozenset({"frequency", "frequency_uncertainty"})


class ClockController:
    """Filter, select, combine and steer; see the module docstring."""

    def __init__(
        self,
        sync: SynchronizationConfig,
        *,
        now_mono_ns: int,
        now_real_ns: int,
        saved: SavedState | DriftPrior | Mapping[str, Any] | object | None = None,
        bounds: StepBounds | None = None,
    ) -> None:
        """``saved``: an :meth:`export_state`, a drift file's :class:`DriftPrior`, or the
        wire form of either as read from a file (validated here: if any field is unusable
        the whole state is ignored and :attr:`rejected_state` says why). ``bounds``: what
        limits steps as the supervisor last heard it; combined with the saved state's, the
        more restrictive of each wins."""
        self.sync = sync
        self.algo = sync.algorithm
        self.rejected_state: StateError | None = None
        if not isinstance(saved, SavedState | DriftPrior | None):
            saved = self._parse(saved, sync)  # a wire form read from a file: untrusted
        restored = restore_frequency(saved)
        self.steerer = Steerer(sync, freq=restored[0] if restored else 0.0)
        self.freq_uncertainty = restored[1] if restored else self.algo.initial_frequency_uncertainty
        self.freq_prior_sigma = (
            max(restored[1], DRIFT_PRIOR_FLOOR)
            if restored
            else self.algo.initial_frequency_uncertainty
        )
        self._saved_filters, self._restored_freq_change = restore_sources(
            saved, now_mono_ns, now_real_ns, self.algo
        )
        # A state saved later than now (monotonic time) is from another boot: its
        # steps bound nothing here. The supervisor's copy is always of this boot.
        file_bounds = saved_bounds(saved)
        if isinstance(saved, SavedState) and saved.mono_ns > now_mono_ns:
            file_bounds = None
        restore_steering(self.steerer, file_bounds.stricter(bounds) if file_bounds else bounds)
        self._kernel_freq = self.steerer.freq_in_force  # set by the first call's SetFrequency
        self._restored: list[SourceFilter] = []
        self._first_call_mono_ns = now_mono_ns
        self.sources: dict[str, SourceState] = {}
        self._real_minus_mono = now_real_ns - now_mono_ns
        self._last_mono_ns, self._last_real_ns = now_mono_ns, now_real_ns
        self._initial_pending = True
        self.synchronized = False
        self.panicked = False
        self.combined: Combined | None = None
        self.last_update_mono_ns: int | None = None
        self.leap_vote = LeapIndicator.NONE
        self.leap_armed = LeapIndicator.NONE
        self.messages: list[str] = []
        # The NTP server each nts-pool member was sent to by its key exchange ("addr:port").
        self._member_servers: dict[str, str] = {}
        self._member_claims: dict[str, int] = {}  # when each member named its server
        self._claims = 0
        self._sought: dict[str, tuple[int, int]] = {}  # member: (claim, mono) last sent off

    def _parse(self, raw: object, sync: SynchronizationConfig) -> SavedState | DriftPrior | None:
        if isinstance(raw, Mapping) and set(raw) <= _DRIFT_KEYS:
            freq = finite_number(raw.get("frequency"))
            unc = finite_number(raw.get("frequency_uncertainty"))
            return None if freq is None or unc is None else DriftPrior(freq, unc)
        try:
            return validate_saved_state(raw, sync)
        except StateError as exc:
            self.rejected_state = exc
        except (TypeError, ValueError, ArithmeticError) as exc:  # a gap in the checks
            self.rejected_state = StateError("state", f"unusable ({exc})")
        return None

    # -- sources -----------------------------------------------------------------

    def add_source(
        self,
        source_id: str,
        kind: SourceKind,
        *,
        poll_log2: int,
        poll_limits: tuple[int, int] | None = None,
    ) -> None:
        limits = poll_limits or (poll_log2, poll_log2)
        filt = SourceFilter(
            kind,
            self.algo,
            poll_log2=poll_log2,
            poll_limits=limits,
            freq_prior=(0.0, self.freq_prior_sigma),
        )
        saved = self._saved_filters.pop(source_id, None)
        if saved is not None and self._restore_filter(filt, saved):
            # The saved filter saw the frequency in force back then (base plus a
            # slew); the first call sets the base.
            if self._initial_pending:
                self._restored.append(filt)
            else:
                filt.steer(0.0, self._restored_freq_change, self._first_call_mono_ns)
            self.messages.append(f"{source_id}: filter state restored")
        self.sources[source_id] = SourceState(source_id, kind, filt, filt.desired_poll)

    def _restore_filter(self, filt: SourceFilter, saved: SavedFilter) -> bool:
        # Validated already; still, a saved filter that cannot be taken over is
        # dropped, never allowed to stop clock-control.
        try:
            return filt.restore(saved, self._last_mono_ns)
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError) as exc:
            filt.reset()
            self.messages.append(f"saved filter state not restored: {exc}")
            return False

    def step_bounds(self) -> StepBounds:
        """What limits steps now (kept by the supervisor across restarts)."""
        s = self.steerer
        return StepBounds(s.steps, s.accumulated_s, not s.in_startup)

    def remove_source(self, source_id: str) -> None:
        self.sources.pop(source_id, None)
        self._member_servers.pop(source_id, None)
        self._member_claims.pop(source_id, None)
        self._sought.pop(source_id, None)

    def note_member_server(self, source_id: str, server: str | None) -> None:
        """The NTP server (``"address:port"``; None: none yet) an nts-pool member polls."""
        if server is None:
            self._member_servers.pop(source_id, None)
            self._member_claims.pop(source_id, None)
        elif self._member_servers.get(source_id) != server:
            self._member_servers[source_id] = server
            self._claims += 1
            self._member_claims[source_id] = self._claims
            src = self.sources.get(source_id)
            if src is not None:
                src.filter.reset()  # another server: what the filter learnt is not its

    def duplicate_of(self, source_id: str) -> str | None:
        """The nts-pool member that already uses this member's NTP server, if any.

        Every member of a pool makes its own key exchange with the same NTS-KE
        server, and may be sent to the same NTP server as another: counted twice,
        one server would be a majority of two. The member that named it first
        keeps it: the server a member names is only its own word, and a
        compromised member that names another's server later must silence
        itself, not the member that was there before it.
        """
        me = nts_pool_member(source_id)
        server = self._member_servers.get(source_id)
        if me is None or server is None:
            return None
        mine = self._member_claims[source_id]
        for other, other_server in self._member_servers.items():
            them = nts_pool_member(other)
            if (other_server == server and them is not None and them[0] == me[0]
                    and self._member_claims[other] < mine and other in self.sources):
                return other
        return None

    def _may_seek_another(self, source_id: str, now_mono_ns: int) -> bool:
        """Once per claim of a duplicate server, and not more often than
        SEEK_SERVER_INTERVAL_S: a pool whose key exchange always names the same
        server must not be asked again and again."""
        claim = self._member_claims[source_id]
        last = self._sought.get(source_id)
        if last is not None and (last[0] == claim
                                 or now_mono_ns - last[1] < SEEK_SERVER_INTERVAL_S * NS_PER_S):
            return False
        self._sought[source_id] = (claim, now_mono_ns)
        return True

    # -- inputs ------------------------------------------------------------------

    def handle_sample(
        self, sample: Sample, *, now_mono_ns: int, now_real_ns: int
    ) -> list[ClockAction]:
        actions = self._begin(now_mono_ns, now_real_ns)
        src = self.sources.get(sample.source_id)
        if self.panicked or src is None:
            if src is None:
                self.messages.append(f"sample from unknown source {sample.source_id!r} ignored")
            return actions
        src.record(sample)
        duplicate = self.duplicate_of(sample.source_id)
        if duplicate is not None:
            why = (f"same NTP server ({self._member_servers[sample.source_id]}) as "
                   f"{duplicate}: not counted twice")
            src.block(why)
            if self._may_seek_another(sample.source_id, now_mono_ns):
                actions.append(SeekAnotherServer(sample.source_id, why))
        elif (sample.leap is LeapIndicator.UNSYNCHRONIZED
              or sample.stratum >= self.sync.local_stratum):
            src.block(
                "source is not synchronized"
                if sample.leap is LeapIndicator.UNSYNCHRONIZED
                else f"stratum {sample.stratum} >= local-stratum {self.sync.local_stratum}"
            )
        else:
            result = src.filter.add_sample(sample)
            if result.reason:
                self.messages.append(f"{src.source_id}: {result.reason}")
            if result.poll_log2 is not None and src.kind is SourceKind.NTP:
                src.poll_log2 = result.poll_log2
                actions.append(AdvisePoll(src.source_id, result.poll_log2))
        actions.extend(self._update(now_mono_ns, now_real_ns))
        return actions

    def handle_unreachable(
        self, source_id: str, *, now_mono_ns: int, now_real_ns: int
    ) -> list[ClockAction]:
        actions = self._begin(now_mono_ns, now_real_ns)
        src = self.sources.get(source_id)
        if src is not None:
            src.mark_unreachable()
        return actions

    def handle_timer(self, *, now_mono_ns: int, now_real_ns: int) -> list[ClockAction]:
        actions = self._begin(now_mono_ns, now_real_ns)
        if self.panicked:
            return actions
        freq = self.steerer.end_slew(now_mono_ns)
        if freq is not None:
            actions.extend(self._apply(0, freq, now_mono_ns))
        if self.synchronized and now_mono_ns >= self._sync_deadline_ns():
            self.synchronized = False
            self.messages.append("no agreeing sources for too long: unsynchronized")
            actions.append(SetSynchronized(False))
        actions.extend(self._leap_actions(now_real_ns))
        return actions

    def notify_clock_stepped_externally(
        self, *, now_mono_ns: int, now_real_ns: int
    ) -> list[ClockAction]:
        actions = self._begin(now_mono_ns, now_real_ns)
        self._restart_filters("told that the clock was stepped")
        if self.synchronized:
            self.synchronized = False
            actions.append(SetSynchronized(False))
        return actions

    def next_timer_mono_ns(self) -> int | None:
        times = []
        if self.steerer.slew_end_ns is not None:
            times.append(self.steerer.slew_end_ns)
        if self.synchronized:
            times.append(self._sync_deadline_ns())
        if self.leap_vote is not LeapIndicator.NONE or self.leap_armed is not LeapIndicator.NONE:
            change = next_leap_change_ns(self._last_real_ns)
            times.append(self._last_mono_ns + change - self._last_real_ns)
        return min(times) if times and not self.panicked else None

    # -- outputs -----------------------------------------------------------------

    def drift(self) -> tuple[float, float]:
        return self.steerer.base_freq, self.freq_uncertainty

    def take_messages(self) -> list[str]:
        """Log lines (source restarts, steps, meddling) since the last call."""
        messages, self.messages = self.messages, []
        return messages

    def system_snapshot(self, *, now_mono_ns: int) -> SystemSnapshot:
        c = self.combined
        return SystemSnapshot(
            synchronized=self.synchronized,
            offset_s=c.estimate.offset if c else 0.0,
            offset_uncertainty_s=c.estimate.offset_sigma if c else math.inf,
            frequency=self.steerer.freq_in_force,
            frequency_uncertainty=self.freq_uncertainty,
            stratum=c.stratum if c and self.synchronized else self.sync.local_stratum,
            reference_id=c.reference_id
            if c and self.synchronized
            else _refid(self.sync.reference_id),
            root_delay_s=c.root_delay_s if c else 0.0,
            root_dispersion_s=c.root_dispersion_s if c else 0.0,
            leap=(self.leap_vote if self.synchronized else LeapIndicator.UNSYNCHRONIZED),
            steps=self.steerer.steps,
            accumulated_steps_s=self.steerer.accumulated_s,
            last_update_mono_ns=self.last_update_mono_ns,
            selected_sources=c.order if c and self.synchronized else (),
        )

    def source_snapshots(self, *, now_mono_ns: int) -> list[SourceSnapshot]:
        return [src.snapshot(now_mono_ns) for src in self.sources.values()]

    def export_state(self) -> SavedState:
        """What a restarted clock-control resumes from (same boot); see core/saved_state.py."""
        filters = {sid: src.filter.to_saved() for sid, src in self.sources.items()
                   if src.filter.ready}
        return SavedState(
            frequency=self.steerer.base_freq,
            frequency_uncertainty=self.freq_uncertainty,
            frequency_in_force=self.steerer.freq_in_force,
            mono_ns=self._last_mono_ns,
            real_ns=self._last_real_ns,
            sources={sid: f for sid, f in filters.items() if f is not None},
            steps=self.steerer.steps,
            accumulated_steps_s=self.steerer.accumulated_s,
            in_startup=self.steerer.in_startup,
        )

    # -- internals ---------------------------------------------------------------

    def _begin(self, now_mono_ns: int, now_real_ns: int) -> list[ClockAction]:
        actions: list[ClockAction] = []
        if self._initial_pending:
            # Put the kernel into a known state before any sample is interpreted.
            self._initial_pending = False
            self._first_call_mono_ns = now_mono_ns
            for filt in self._restored:
                filt.steer(0.0, self._restored_freq_change, now_mono_ns)
            self._restored = []
            actions += [
                SetFrequency(self.steerer.freq_in_force),
                SetSynchronized(False),
                SetLeap(LeapIndicator.NONE),
            ]
        jump_ns = (now_real_ns - now_mono_ns) - self._real_minus_mono
        self._real_minus_mono += jump_ns
        self._last_mono_ns, self._last_real_ns = now_mono_ns, now_real_ns
        if self._leap_explains(jump_ns):
            self.messages.append("leap second passed")
        elif abs(jump_ns) > self.algo.meddling_threshold * NS_PER_S:
            self._restart_filters(f"clock stepped underneath by {jump_ns / NS_PER_S:+.6f} s")
        return actions

    def _leap_explains(self, jump_ns: int) -> bool:
        expected = {LeapIndicator.INSERT: -NS_PER_S, LeapIndicator.DELETE: NS_PER_S}.get(
            self.leap_armed
        )
        return expected is not None and abs(jump_ns - expected) < NS_PER_S // 10

    def _restart_filters(self, why: str) -> None:
        self.messages.append(f"{why}: restarting every source filter")
        for src in self.sources.values():
            src.filter.reset()

    def _next_update_ns(self, now_ns: int) -> int | None:
        """When the next sample is expected: the earliest of every reachable source's
        last sample plus its poll interval that is still ahead."""
        due = [
            src.last.mono_ns + int(2.0**src.last.poll_log2 * NS_PER_S)
            for src in self.sources.values()
            if src.last is not None and src.reachable
        ]
        return min((t for t in due if t > now_ns), default=None)

    def _poll_interval_s(self, combined: Combined) -> float | None:
        """The shortest poll interval of the sources combined: how long a slew lasts at least."""
        polls = [
            2.0 ** self.sources[sid].poll_log2 for sid in combined.order if sid in self.sources
        ]
        return min(polls, default=None)

    def _sync_deadline_ns(self) -> int:
        longest = max((2.0**src.poll_log2 for src in self.sources.values()), default=1.0)
        timeout = max(SYNC_TIMEOUT_POLLS * longest, SYNC_TIMEOUT_MIN_S)
        last = self._last_mono_ns if self.last_update_mono_ns is None else self.last_update_mono_ns
        return last + int(timeout * NS_PER_S)

    def _judge(self, now_ns: int) -> tuple[list[Candidate], dict[str, SourceEstimate], int]:
        """Candidates for selection, their estimates, and how many sources are starting up."""
        candidates, estimates, starting = [], {}, 0
        for src in self.sources.values():
            est = src.filter.estimate(now_ns)
            reason = src.unusable_reason()
            # Before the first correction, a source about to finish its start-up may
            # still outvote the first one ready; later it must not pause steering.
            if est is None and self.steerer.in_startup and src.starting_up(now_ns):
                starting += 1
            if est is None or reason:
                src.set_state(SelectionState.UNUSABLE, reason or "collecting start-up samples")
                continue
            radius = (
                self.algo.range_statistical_weight * est.offset_sigma
                + self.algo.range_delay_weight * src.filter.mean_delay()
            )
            if radius > self.algo.maximum_source_uncertainty:
                src.set_state(SelectionState.UNUSABLE, f"too uncertain (±{radius:.6f} s)")
                continue
            candidates.append(Candidate(src.source_id, est.offset, radius))
            estimates[src.source_id] = src.estimate_for_combination(est)
        return candidates, estimates, starting

    def _update(self, now_ns: int, now_real_ns: int) -> list[ClockAction]:
        """Select, combine and steer after new information; the actions to carry out."""
        combined = self._select_and_combine(now_ns)
        if combined is None:
            return []
        decision = self.steerer.update(
            combined.estimate.offset,
            combined.estimate.freq,
            now_ns,
            self._next_update_ns(now_ns),
            self._poll_interval_s(combined),
            combined.estimate.offset_sigma,
            combined.estimate.freq_sigma,
        )
        if decision.panic is not None:
            self.panicked = True
            self.messages.append(decision.panic)
            return [Panic(decision.panic)]
        self.combined = combined
        self.freq_uncertainty = combined.estimate.freq_sigma
        self.last_update_mono_ns = now_ns
        step_ns = round(decision.step_s * NS_PER_S)
        if step_ns:
            self.messages.append(f"stepping the clock by {step_ns / NS_PER_S:+.9f} s")
        actions = self._apply(step_ns, decision.freq, now_ns)
        est = combined.estimate
        max_error = combined.root_dispersion_s + combined.root_delay_s / 2 + abs(est.offset)
        actions.append(SetErrorEstimate(max_error_s=max_error, est_error_s=est.offset_sigma))
        if not self.synchronized:
            self.synchronized = True
            actions.append(SetSynchronized(True))
        self.leap_vote = combined.leap
        actions.extend(self._leap_actions(now_real_ns))
        return actions

    def _select_and_combine(self, now_ns: int) -> Combined | None:
        """Judge and mark every source; combine the agreeing ones (None: no consensus)."""
        candidates, estimates, starting = self._judge(now_ns)
        pulses = frozenset(sid for sid, src in self.sources.items() if src.kind is SourceKind.PPS)
        chosen = select(candidates, self.sync.minimum_agreeing_sources, starting, pulses)
        if not chosen.consensus:
            why = (
                f"no majority agrees ({chosen.agreeing} of {len(candidates)} candidates"
                + (f" and {starting} starting up" if starting else "")
                + f"; minimum-agreeing-sources = {self.sync.minimum_agreeing_sources})"
            )
            for c in candidates:
                self.sources[c.source_id].set_state(SelectionState.UNUSABLE, why)
            return None
        combined = combine(
            [estimates[s] for s in chosen.selected],
            ignore_server_dispersion=self.algo.ignore_server_dispersion,
        )
        for sid in chosen.falsetickers:
            self.sources[sid].set_state(SelectionState.FALSETICKER, "disagrees with the majority")
        for index, sid in enumerate(combined.order):
            state = SelectionState.SELECTED if index == 0 else SelectionState.COMBINED
            self.sources[sid].set_state(state, "")
        return combined

    def _apply(self, step_ns: int, freq: float, now_ns: int) -> list[ClockAction]:
        """Emit a step and a frequency, and fold both into every filter."""
        actions: list[ClockAction] = []
        change = freq - self._kernel_freq
        if step_ns:
            self._real_minus_mono += step_ns
            actions.append(Step(step_ns))
        if step_ns or change:
            for src in self.sources.values():
                src.filter.steer(step_ns / NS_PER_S, change, now_ns)
        if change or step_ns:
            actions.append(SetFrequency(freq))
        self._kernel_freq = freq
        return actions

    def _leap_actions(self, now_real_ns: int) -> list[ClockAction]:
        wanted = leap_to_arm(
            self.leap_vote if self.synchronized else LeapIndicator.NONE, now_real_ns
        )
        if wanted is self.leap_armed:
            return []
        self.leap_armed = wanted
        return [SetLeap(wanted)]


def _refid(text: str) -> int:
    raw = text.encode("ascii")[:4].ljust(4, b"\0")
    return int.from_bytes(raw, "big")
