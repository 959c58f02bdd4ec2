"""Clock-control's saved state: every field is validated, and step bounds only grow.

The quick-restart file used to be trusted: a negative variance crashed every
restarted clock-control (sqrt of a negative number), ``int(inf)`` in a filter
crashed it once, and a rewritten file could reset the step counters and
re-open the start-up step limit (issue #17, item 4).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import Any

import pytest
from ntpd_py.core.actions import Panic, Step
from ntpd_py.core.controller import ClockController
from ntpd_py.core.controller_state import StateError, StepBounds, validate_saved_state
from ntpd_py.core.events import SourceKind
from ntpd_py.core.saved_state import EXPORT_VERSION

from .test_controller import Harness, run_phc, sync

PTP = "/dev/ptp0"


def _config(**extra: Any) -> Any:
    return sync(**{"minimum-agreeing-sources": 1, **extra})


def _exported(**extra: Any) -> tuple[Harness, dict[str, Any]]:
    h = Harness(_config(**extra))
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    run_phc(h, 30, noise=50e-9)
    return h, json.loads(json.dumps(h.ctl.export_state().to_wire()))


def _poisoned(saved: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    state = copy.deepcopy(saved)
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return state


def test_a_real_export_validates() -> None:
    h, saved = _exported()
    assert validate_saved_state(saved, h.ctl.sync).to_wire() == saved


def test_the_typed_snapshot_survives_its_wire_form() -> None:
    # What is saved is a SavedState; what is read back is the same SavedState, with
    # each field typed (ints stay ints, tuples come back from JSON lists).
    h, _ = _exported()
    state = h.ctl.export_state()
    assert state.version == EXPORT_VERSION and PTP in state.sources
    back = validate_saved_state(json.loads(json.dumps(state.to_wire())), h.ctl.sync)
    assert back == state
    assert isinstance(back.mono_ns, int) and isinstance(back.sources[PTP].kalman, tuple)
    with_backend = dataclasses.replace(state, backend={"base_mono": 5, "freq": 1e-6})
    assert validate_saved_state(with_backend.to_wire(), h.ctl.sync) == with_backend


POISON = [
    (("frequency",), 600e-6, "frequency"),  # beyond maximum-frequency-steer
    (("frequency",), math.inf, "frequency"),
    (("frequency",), "1e-5", "frequency"),
    (("frequency_uncertainty",), -1e-6, "frequency_uncertainty"),
    (("frequency_uncertainty",), 0.0, "frequency_uncertainty"),
    (("frequency_in_force",), math.nan, "frequency_in_force"),
    (("mono_ns",), 1.5e12, "mono_ns"),
    (("mono_ns",), True, "mono_ns"),
    (("real_ns",), 2**70, "real_ns"),
    (("steps",), -1, "steps"),
    (("steps",), 2.0, "steps"),
    (("accumulated_steps_s",), math.inf, "accumulated_steps_s"),
    (("accumulated_steps_s",), -0.5, "accumulated_steps_s"),
    (("in_startup",), 1, "in_startup"),
    (("version",), 2, "version"),
    (("sources",), [], "sources"),
    (("sources", PTP, "kalman", 3), -1e-12, "p00"),  # negative variance: crashed before
    (("sources", PTP, "kalman", 5), -1e-20, "p11"),
    (("sources", PTP, "kalman", 0), math.inf, "t_ns"),  # int(inf): crashed before
    (("sources", PTP, "kalman", 0), 2**80, "t_ns"),
    (("sources", PTP, "kalman", 1), math.nan, "offset"),
    (("sources", PTP, "kalman", 4), 1.0, "kalman"),  # p01^2 > p00 p11
    (("sources", PTP, "kalman"), [1, 2, 3], "kalman"),
    (("sources", PTP, "wander"), 0.0, "wander"),
    (("sources", PTP, "delays"), [math.inf], "delays"),
    (("sources", PTP, "delays"), [-1.0], "delays"),
    (("sources", PTP, "desired_poll"), -32, "desired_poll"),
    (("sources", PTP, "samples"), -3, "samples"),
    (("sources", PTP, "kind"), "gps", "kind"),
    (("sources", PTP, "kind"), [], "kind"),  # unhashable: raised TypeError (found by fuzzing)
    (("sources", PTP, "extra"), 1, "sources"),
    (("_backend",), {"freq": math.inf}, "_backend"),
    (("surprise",), 1, "surprise"),
]


@pytest.mark.parametrize(("path", "value", "field"), POISON,
                         ids=[f"{'.'.join(map(str, p))}={v!r}" for p, v, _ in POISON])
def test_every_poisoned_field_is_rejected_and_named(path: tuple[Any, ...], value: Any,
                                                    field: str) -> None:
    h, saved = _exported()
    bad = _poisoned(saved, path, value)
    with pytest.raises(StateError) as info:
        validate_saved_state(bad, h.ctl.sync)
    assert field in str(info.value)
    # The controller given it starts afresh instead, says why, and keeps working.
    h.ctl = ClockController(h.ctl.sync, saved=bad, **h.now())
    assert h.ctl.rejected_state is not None and field in str(h.ctl.rejected_state)
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    assert not h.ctl.sources[PTP].filter.ready  # nothing of the bad state was taken over
    assert h.ctl.steerer.base_freq == 0.0
    run_phc(h, 10, noise=50e-9)
    assert h.ctl.system_snapshot(now_mono_ns=h.clock.mono_ns(h.t)).synchronized


def test_a_missing_key_is_rejected() -> None:
    h, saved = _exported()
    del saved["in_startup"]
    with pytest.raises(StateError, match="in_startup"):
        validate_saved_state(saved, h.ctl.sync)


def test_step_bounds_combine_to_the_more_restrictive() -> None:
    a = StepBounds(steps=3, accumulated_s=0.5, startup_over=False)
    b = StepBounds(steps=1, accumulated_s=2.0, startup_over=True)
    assert a.stricter(b) == b.stricter(a) == StepBounds(3, 2.0, True)
    assert a.stricter(None) == a


def test_a_state_claiming_no_steps_cannot_reopen_the_startup_limit() -> None:
    # Start-up steps are unlimited, later ones limited to 0.5 s.
    config = _config(**{"single-step-panic-threshold": 0.5})
    h, saved = _exported(**{"single-step-panic-threshold": 0.5})
    assert saved["steps"] == 1 and saved["in_startup"] is False
    kept = h.ctl.step_bounds()
    assert kept == StepBounds(1, pytest.approx(0.05, abs=1e-3), True)
    # A valid state that says "no step yet, still starting up" (a replayed early file).
    forged = dict(saved, steps=0, accumulated_steps_s=0.0, in_startup=True)
    h.ctl = ClockController(config, saved=forged, bounds=kept, **h.now())
    assert h.ctl.rejected_state is None
    assert h.ctl.steerer.in_startup is False
    assert h.ctl.steerer.steps == 1
    assert h.ctl.step_bounds() == kept
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    h.apply(h.ctl.handle_timer(**h.now()))
    h.clock.step(2 * 1_000_000_000)  # someone moves the clock by 2 s
    for _ in range(10):
        h.sample(PTP, SourceKind.PTP, noise=50e-9)
        h.advance(1.0)
    # Not a start-up step: refused by single-step-panic-threshold.
    assert any(isinstance(a, Panic) and "single-step-panic-threshold" in a.message
               for a in h.log)
    assert len([a for a in h.log if isinstance(a, Step)]) == 1


def test_without_the_supervisors_bounds_the_same_state_would_permit_a_startup_step() -> None:
    """The control experiment of the test above: the bounds are what refuses the step."""
    config = _config(**{"single-step-panic-threshold": 0.5})
    h, saved = _exported(**{"single-step-panic-threshold": 0.5})
    forged = dict(saved, steps=0, accumulated_steps_s=0.0, in_startup=True)
    h.ctl = ClockController(config, saved=forged, **h.now())
    assert h.ctl.steerer.in_startup is True


def test_a_state_from_another_boot_carries_no_bounds() -> None:
    h, saved = _exported()
    later = dict(saved, mono_ns=saved["mono_ns"] + 10**15)  # saved "after" now: not this boot
    ctl = ClockController(h.ctl.sync, saved=later, **h.now())
    assert ctl.steerer.steps == 0 and ctl.steerer.in_startup
    ctl = ClockController(h.ctl.sync, saved=later, bounds=StepBounds(2, 1.0, True), **h.now())
    assert ctl.steerer.steps == 2 and not ctl.steerer.in_startup


def test_bounds_only_grow_with_steps() -> None:
    h = Harness(_config())
    assert h.ctl.step_bounds() == StepBounds(0, 0.0, False)
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    run_phc(h, 10, noise=50e-9)
    bounds = h.ctl.step_bounds()
    assert bounds.steps == 1 and bounds.startup_over and bounds.accumulated_s > 0.04
