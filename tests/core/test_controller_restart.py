"""Regression: a restarted clock-control with several restored sources (found by the e2e run).

Restored filters are ready at once, but a source has no sample yet after the
restart; combining it then crashed clock-control (an assertion on the missing
last sample) on every restart, so the supervisor restarted it in a loop.
"""

from __future__ import annotations

import json

from ntpd_py.core.actions import Step
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import SourceKind
from ntpd_py.core.snapshots import SelectionState

from .test_controller import Harness, sync


def _both(h: Harness, seconds: int) -> None:
    for _ in range(seconds):
        h.sample("ptp", SourceKind.PTP, noise=50e-9)
        h.sample("ntp", SourceKind.NTP, noise=20e-6, delay=200e-6)
        h.advance(1.0)


def test_restart_with_two_restored_sources_waits_for_each_sample() -> None:
    config = sync(**{"minimum-agreeing-sources": 1})
    h = Harness(config)
    for sid, kind in (("ptp", SourceKind.PTP), ("ntp", SourceKind.NTP)):
        h.ctl.add_source(sid, kind, poll_log2=0)
    _both(h, 60)
    before = abs(h.clock.error(h.t))
    assert before < 5e-6
    saved = json.loads(json.dumps(h.ctl.export_state().to_wire()))
    h.ctl = ClockController(config, saved=saved, **h.now())
    for sid, kind in (("ptp", SourceKind.PTP), ("ntp", SourceKind.NTP)):
        h.ctl.add_source(sid, kind, poll_log2=0)
    assert h.ctl.sources["ntp"].filter.ready
    h.apply(h.ctl.handle_timer(**h.now()))
    h.sample("ptp", SourceKind.PTP, noise=50e-9)  # crashed here before the fix
    assert h.state("ntp") is SelectionState.UNUSABLE
    assert h.state("ptp") is SelectionState.SELECTED
    _both(h, 10)
    assert h.state("ntp") is not SelectionState.UNUSABLE
    assert len([a for a in h.log if isinstance(a, Step)]) == 1  # only the start-up step
    assert abs(h.clock.error(h.t)) < 5e-6  # no jump: as close as before the restart
