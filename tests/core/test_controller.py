"""ClockController: the whole algorithm through its public API, on a simulated clock."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
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
from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.controller import SEEK_SERVER_INTERVAL_S, ClockController
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock
from ntpd_py.core.snapshots import SelectionState

S = 1_000_000_000
EPOCH = 1_780_000_000 * S  # 2026-05-28


def sync(**kwargs: Any) -> SynchronizationConfig:
    return SynchronizationConfig.model_validate(kwargs)


class Harness:
    """A simulated local clock that carries out the controller's actions."""

    def __init__(self, config: SynchronizationConfig, *, offset: float = 0.05,
                 freq: float = 20e-6, saved: dict[str, Any] | None = None,
                 epoch: int = EPOCH) -> None:
        model = LocalClockModel(LocalClockParams(offset_s=offset, frequency=freq), seed=1)
        self.clock = SimClock(model, real_epoch_ns=epoch, mono_epoch_ns=1000 * S)
        self.t = 0
        self.rnd = random.Random(7)
        self.ctl = ClockController(config, saved=saved, **self.now())
        self.log: list[ClockAction] = []

    def now(self) -> dict[str, int]:
        return {"now_mono_ns": self.clock.mono_ns(self.t), "now_real_ns": self.clock.realtime_ns(self.t)}

    def apply(self, actions: list[ClockAction]) -> list[ClockAction]:
        for action in actions:
            if isinstance(action, SetFrequency):
                self.clock.set_frequency(self.t, action.freq)
            elif isinstance(action, Step):
                self.clock.step(action.offset_ns)
        self.log.extend(actions)
        return actions

    def advance(self, seconds: float) -> None:
        end = self.t + int(seconds * S)
        while (due := self.ctl.next_timer_mono_ns()) is not None and due <= self.clock.mono_ns(end):
            self.t = max(self.clock.true_time_at_mono(due, self.t), self.t)
            self.apply(self.ctl.handle_timer(**self.now()))
        self.t = end

    def sample(self, sid: str, kind: SourceKind, *, error: float = 0.0, noise: float = 0.0,
               unc: float = 50e-9, delay: float = 0.0, leap: LeapIndicator = LeapIndicator.NONE,
               stratum: int = 1) -> list[ClockAction]:
        offset = error - self.clock.error(self.t) + (self.rnd.gauss(0, noise) if noise else 0.0)
        ptp = kind is SourceKind.PTP
        s = Sample(sid, kind, offset, delay, unc if ptp else 0.0, 0.0, 0.0 if ptp else 1e-6,
                   stratum, leap, 0x7F000001, self.clock.mono_ns(self.t),
                   self.clock.realtime_ns(self.t), 0)
        return self.apply(self.ctl.handle_sample(s, **self.now()))

    def state(self, sid: str) -> SelectionState:
        return next(s.state for s in self.ctl.source_snapshots(now_mono_ns=self.clock.mono_ns(self.t))
                    if s.source_id == sid)


def run_phc(h: Harness, seconds: int, sid: str = "/dev/ptp0", **kw: Any) -> None:
    for _ in range(seconds):
        h.sample(sid, SourceKind.PTP, **kw)
        h.advance(1.0)


def test_ptp_only_with_one_agreeing_source_synchronizes() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 30, noise=50e-9)
    steps = [a for a in h.log if isinstance(a, Step)]
    assert len(steps) == 1 and steps[0].offset_ns == pytest.approx(-50.04e6, abs=1e3)
    assert abs(h.clock.error(h.t)) < 1e-6
    assert abs(h.clock.rate_error(h.t)) < 1e-7
    snap = h.ctl.system_snapshot(now_mono_ns=h.clock.mono_ns(h.t))
    assert snap.synchronized and snap.selected_sources == ("/dev/ptp0",) and snap.stratum == 2
    assert h.state("/dev/ptp0") is SelectionState.SELECTED
    assert SetSynchronized(True) in h.log


def test_first_call_puts_the_kernel_in_a_known_state() -> None:
    h = Harness(sync())
    first = h.ctl.handle_timer(**h.now())
    assert first[:3] == [SetFrequency(0.0), SetSynchronized(False), SetLeap(LeapIndicator.NONE)]
    assert h.ctl.handle_timer(**h.now()) == []


def test_ptp_uncertainty_is_never_zero() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 10, unc=0.0)
    snap = h.ctl.source_snapshots(now_mono_ns=h.clock.mono_ns(h.t))[0]
    assert 0.0 < snap.uncertainty_s < 1e-6


def test_ptp_sources_count_toward_minimum_agreeing_sources() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 3}))
    for sid in ("/dev/ptp0", "/dev/ptp1"):
        h.ctl.add_source(sid, SourceKind.PTP, poll_log2=0)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    for _ in range(10):
        h.sample("/dev/ptp0", SourceKind.PTP)
        h.sample("/dev/ptp1", SourceKind.PTP)
        h.sample("ntp", SourceKind.NTP, delay=200e-6)
        h.advance(1.0)
    assert h.ctl.synchronized
    assert {h.state(s) for s in ("/dev/ptp0", "/dev/ptp1", "ntp")} <= {
        SelectionState.SELECTED, SelectionState.COMBINED}


def test_falseticker_is_never_used_and_shown_as_x() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 2}))
    for sid in ("a", "b", "c", "bad"):
        h.ctl.add_source(sid, SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    for _ in range(20):
        for sid in ("a", "b", "c"):
            h.sample(sid, SourceKind.NTP, delay=300e-6)
        h.sample("bad", SourceKind.NTP, error=0.05, delay=300e-6)
        assert "bad" not in h.ctl.system_snapshot(now_mono_ns=h.clock.mono_ns(h.t)).selected_sources
        h.advance(2.0)
    assert h.state("bad") is SelectionState.FALSETICKER
    assert abs(h.clock.error(h.t)) < 1e-4


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"leap": LeapIndicator.UNSYNCHRONIZED}, "not synchronized"),
    ({"stratum": 16}, "local-stratum"),
])
def test_unusable_sources_are_question_marks(kwargs: dict[str, Any], reason: str) -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    for _ in range(6):
        h.sample("ntp", SourceKind.NTP, delay=200e-6, **kwargs)
        h.advance(2.0)
    snap = h.ctl.source_snapshots(now_mono_ns=h.clock.mono_ns(h.t))[0]
    assert snap.state is SelectionState.UNUSABLE and reason in snap.reason
    assert not h.ctl.synchronized


def test_unreachable_source_is_unusable_until_it_answers() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 5)
    h.apply(h.ctl.handle_unreachable("/dev/ptp0", **h.now()))
    assert h.state("/dev/ptp0") is SelectionState.UNUSABLE
    run_phc(h, 1)
    assert h.state("/dev/ptp0") is SelectionState.SELECTED
    assert h.ctl.source_snapshots(now_mono_ns=0)[0].reach == 0b1111101


def test_no_consensus_means_no_steering() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    h.ctl.add_source("/dev/ptp1", SourceKind.PTP, poll_log2=0)
    for _ in range(10):
        h.sample("/dev/ptp0", SourceKind.PTP)
        h.sample("/dev/ptp1", SourceKind.PTP, error=300e-6)
        h.advance(1.0)
    assert not any(isinstance(a, Step) for a in h.log) and not h.ctl.synchronized
    assert "no majority" in h.ctl.source_snapshots(now_mono_ns=0)[0].reason


def test_ntp_sources_get_poll_advice() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}), offset=0.0, freq=0.0)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    rnd = random.Random(3)
    for _ in range(250):
        out, back = rnd.expovariate(1e4), rnd.expovariate(1e4)
        h.sample("ntp", SourceKind.NTP, error=(out - back) / 2, delay=200e-6 + out + back)
        h.advance(64.0)
    advice = [a for a in h.log if isinstance(a, AdvisePoll)]
    assert advice and advice[-1] == AdvisePoll("ntp", 6)


def test_steps_only_above_the_threshold_and_error_estimates_kept() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}), offset=0.004, freq=0.0)
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 40)
    assert not any(isinstance(a, Step) for a in h.log)  # 4 ms < step-threshold: slewed
    assert abs(h.clock.error(h.t)) < 1e-6
    estimates = [a for a in h.log if isinstance(a, SetErrorEstimate)]
    assert estimates and 0 < estimates[-1].est_error_s < 1e-6
    assert all(abs(a.freq) <= 495e-6 + 1e-12 for a in h.log if isinstance(a, SetFrequency))


def test_panic_beyond_the_single_step_threshold() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 10)
    actions: list[ClockAction] = []
    for _ in range(5):  # the PHC jumps by 1200 s: confirmed after a few samples
        actions += h.sample("/dev/ptp0", SourceKind.PTP, error=1200.0)
        h.advance(1.0)
    panics = [a for a in actions if isinstance(a, Panic)]
    assert len(panics) == 1 and panics[0].exit_code == 70
    assert "+1200.0" in panics[0].message and "single-step-panic-threshold" in panics[0].message
    assert not any(isinstance(a, Step) for a in actions)
    assert h.sample("/dev/ptp0", SourceKind.PTP, error=1200.0) == []
    assert h.ctl.next_timer_mono_ns() is None


def test_clock_stepped_underneath_restarts_the_filters() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 10)
    h.clock.step(-10 * S)  # someone else sets the clock back by 10 s
    h.sample("/dev/ptp0", SourceKind.PTP)
    messages = h.ctl.take_messages()
    assert any("stepped underneath" in m for m in messages)
    snap = h.ctl.source_snapshots(now_mono_ns=h.clock.mono_ns(h.t))[0]
    assert snap.state is SelectionState.UNUSABLE and "start-up" in snap.reason
    run_phc(h, 5)
    assert abs(h.clock.error(h.t)) < 1e-6  # stepped back again by the algorithm


def test_notify_clock_stepped_externally() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 10)
    actions = h.apply(h.ctl.notify_clock_stepped_externally(**h.now()))
    assert actions == [SetSynchronized(False)]
    assert not h.ctl.sources["/dev/ptp0"].filter.ready


def test_leap_second_is_armed_on_the_last_day_only() -> None:
    day_before = 1_782_864_000 * S - 86400 * S - 600 * S  # 2026-06-29 23:50 UTC
    h = Harness(sync(**{"minimum-agreeing-sources": 1}), offset=0.0, freq=0.0, epoch=day_before)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=4, poll_limits=(4, 4))
    for _ in range(60):  # 20 minutes, crossing midnight into June 30
        h.sample("ntp", SourceKind.NTP, delay=200e-6, leap=LeapIndicator.INSERT)
        h.advance(20.0)
    leaps = [a for a in h.log if isinstance(a, SetLeap)]
    assert leaps[-1] == SetLeap(LeapIndicator.INSERT)
    assert h.ctl.system_snapshot(now_mono_ns=0).leap is LeapIndicator.INSERT
    h.advance(86400.0)  # past the end of June: the flag is cleared by the timer
    assert [a for a in h.log if isinstance(a, SetLeap)][-1] == SetLeap(LeapIndicator.NONE)


def test_export_is_json_safe_and_a_restart_resumes_without_stepping() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 60, noise=50e-9)
    saved = json.loads(json.dumps(h.ctl.export_state().to_wire()))
    freq, unc = h.ctl.drift()
    assert freq == pytest.approx(-20e-6, abs=1e-8) and 0 < unc < 1e-7
    # a new process, same boot: frequency and filter come back, no step is needed
    h.ctl = ClockController(sync(**{"minimum-agreeing-sources": 1}), saved=saved, **h.now())
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    assert h.ctl.sources["/dev/ptp0"].filter.ready
    first = h.apply(h.ctl.handle_timer(**h.now()))
    assert first[0] == SetFrequency(freq)
    run_phc(h, 5, noise=50e-9)
    assert len([a for a in h.log if isinstance(a, Step)]) == 1  # only the original one
    assert abs(h.clock.error(h.t)) < 1e-6


def test_restart_from_a_drift_file_only() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}), offset=1e-3)
    h.ctl = ClockController(sync(**{"minimum-agreeing-sources": 1}),
                            saved={"frequency": -20e-6, "frequency_uncertainty": 1e-8}, **h.now())
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    assert not h.ctl.sources["/dev/ptp0"].filter.ready
    assert h.ctl.drift() == (-20e-6, 1e-8)
    run_phc(h, 10)
    assert abs(h.clock.rate_error(h.t)) < 1e-7 and abs(h.clock.error(h.t)) < 1e-6


@pytest.mark.parametrize("saved", [
    {}, {"frequency": "x"}, {"frequency": 1.0, "frequency_uncertainty": 1e-6},
    {"frequency": 1e-6, "frequency_uncertainty": -1.0}, {"frequency": math.nan},
])
def test_unusable_saved_state_is_ignored(saved: dict[str, Any]) -> None:
    h = Harness(sync())
    h.ctl = ClockController(sync(), saved=saved, **h.now())
    assert h.ctl.drift()[0] == 0.0


def test_sample_from_an_unknown_source_is_ignored() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.handle_timer(**h.now())
    assert h.sample("nobody", SourceKind.PTP) == []
    assert any("unknown source" in m for m in h.ctl.take_messages())


def test_a_restarting_source_does_not_pause_steering() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=4, poll_limits=(4, 4))
    for _ in range(8):
        h.sample("ntp", SourceKind.NTP, delay=200e-6)
        run_phc(h, 2)
    assert h.ctl.synchronized
    h.ctl.sources["ntp"].filter.reset()  # e.g. its offset jumped: it starts up again
    h.sample("ntp", SourceKind.NTP, delay=200e-6)
    before = len(h.log)
    run_phc(h, 3)
    assert any(isinstance(a, SetFrequency) for a in h.log[before:])
    assert h.state("/dev/ptp0") is SelectionState.SELECTED


def test_losing_every_source_means_unsynchronized_after_a_while() -> None:
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    h.ctl.add_source("/dev/ptp0", SourceKind.PTP, poll_log2=0)
    run_phc(h, 10)
    assert h.ctl.synchronized
    h.advance(14.0)  # the last update was at 9 s
    assert h.ctl.synchronized
    h.advance(5.0)  # 8 polls, at least 16 s, without an update
    assert not h.ctl.synchronized and h.log[-1] == SetSynchronized(False)
    snap = h.ctl.system_snapshot(now_mono_ns=h.clock.mono_ns(h.t))
    assert snap.stratum == 16 and snap.leap is LeapIndicator.UNSYNCHRONIZED


def test_nts_pool_members_sent_to_one_server_count_once() -> None:
    """Three nts-pool members, two sent to the same NTP server by their key exchanges: that
    server is one vote, so two agreeing sources are not there until member 3 has another."""
    h = Harness(sync(**{"minimum-agreeing-sources": 2}))
    ids = [f"nts-pool:pool.example:4460#{n}" for n in (1, 2, 3)]
    for sid in ids:
        h.ctl.add_source(sid, SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    h.ctl.note_member_server(ids[0], "192.0.2.1:123")
    h.ctl.note_member_server(ids[1], "192.0.2.1:123")
    for _ in range(8):
        for sid in ids[:2]:
            h.sample(sid, SourceKind.NTP, delay=300e-6)
        h.advance(2.0)
    assert not h.ctl.synchronized
    snap = {s.source_id: s for s in h.ctl.source_snapshots(now_mono_ns=h.clock.mono_ns(h.t))}
    assert snap[ids[1]].state is SelectionState.UNUSABLE
    assert "192.0.2.1:123" in snap[ids[1]].reason and ids[0] in snap[ids[1]].reason
    assert h.ctl.duplicate_of(ids[0]) is None
    # member 3 gets another server; a pool elsewhere with the same server is not a duplicate
    h.ctl.note_member_server(ids[2], "192.0.2.7:123")
    h.ctl.note_member_server("nts-pool:other.example:4460#1", "192.0.2.1:123")
    assert h.ctl.duplicate_of("nts-pool:other.example:4460#1") is None
    for _ in range(8):
        for sid in ids:
            h.sample(sid, SourceKind.NTP, delay=300e-6)
        h.advance(2.0)
    assert h.ctl.synchronized
    assert h.state(ids[1]) is SelectionState.UNUSABLE
    assert {h.state(ids[0]), h.state(ids[2])} <= {SelectionState.SELECTED, SelectionState.COMBINED}
    # member 1 goes away: member 2 is no longer anyone's duplicate
    h.ctl.remove_source(ids[0])
    assert h.ctl.duplicate_of(ids[1]) is None


def test_a_member_naming_another_members_server_later_silences_itself() -> None:
    """The server a member names is its own word: member 1, compromised, names member 2's
    server after member 2 did. Member 1 is the duplicate, not member 2; and a member that
    moves away and back names it anew (its earlier claim does not come back)."""
    h = Harness(sync(**{"minimum-agreeing-sources": 1}))
    one, two = "nts-pool:pool.example:4460#1", "nts-pool:pool.example:4460#2"
    for sid in (one, two):
        h.ctl.add_source(sid, SourceKind.NTP, poll_log2=4, poll_limits=(4, 6))
    h.ctl.note_member_server(one, "192.0.2.1:123")
    h.ctl.note_member_server(two, "192.0.2.2:123")
    assert h.ctl.duplicate_of(one) is None and h.ctl.duplicate_of(two) is None
    h.ctl.note_member_server(one, "192.0.2.2:123")
    assert h.ctl.duplicate_of(two) is None
    assert h.ctl.duplicate_of(one) == two
    for _ in range(8):
        for sid in (one, two):
            h.sample(sid, SourceKind.NTP, delay=300e-6)
        h.advance(2.0)
    assert h.state(one) is SelectionState.UNUSABLE
    assert h.state(two) in {SelectionState.SELECTED, SelectionState.COMBINED}
    # member 1 is asked once for a new key exchange (8 of its samples were blocked)
    sought = [a for a in h.log if isinstance(a, SeekAnotherServer)]
    assert [a.source_id for a in sought] == [one] and two in sought[0].reason
    # repeating the same server is not a new claim, and is not sent off again
    h.ctl.note_member_server(one, "192.0.2.2:123")
    assert h.ctl.duplicate_of(one) == two
    h.sample(one, SourceKind.NTP, delay=300e-6)
    assert sum(isinstance(a, SeekAnotherServer) for a in h.log) == 1
    # member 2 moves away and back: now member 1 was there first; member 2 is sent
    # off once, and member 1 on a new claim of its own only after SEEK_SERVER_INTERVAL_S
    h.ctl.note_member_server(two, "192.0.2.9:123")
    h.ctl.note_member_server(two, "192.0.2.2:123")
    assert h.ctl.duplicate_of(two) == one and h.ctl.duplicate_of(one) is None
    h.sample(two, SourceKind.NTP, delay=300e-6)
    h.sample(two, SourceKind.NTP, delay=300e-6)
    assert [a.source_id for a in h.log if isinstance(a, SeekAnotherServer)] == [one, two]
    h.ctl.note_member_server(one, "192.0.2.3:123")
    h.ctl.note_member_server(one, "192.0.2.2:123")
    h.ctl.note_member_server(two, "192.0.2.8:123")
    h.ctl.note_member_server(two, "192.0.2.2:123")  # member 2 newer again: 1 keeps it
    h.sample(two, SourceKind.NTP, delay=300e-6)
    assert [a.source_id for a in h.log if isinstance(a, SeekAnotherServer)] == [one, two]
    h.advance(SEEK_SERVER_INTERVAL_S)
    h.sample(two, SourceKind.NTP, delay=300e-6)
    assert [a.source_id for a in h.log if isinstance(a, SeekAnotherServer)] == [one, two, two]
