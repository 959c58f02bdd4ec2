"""The supervisor's copy of clock-control's step bounds: only from clock-control, only growing."""

from __future__ import annotations

from ntpd_py.core.controller_state import StepBounds
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.messages import SteeringBounds
from ntpd_py.plumbing import handover
from ntpd_py.supervisor.children import CHILD_ACCEPTS, Child
from ntpd_py.supervisor.main import Supervisor


def _supervisor() -> Supervisor:
    sup = Supervisor.__new__(Supervisor)  # only the bookkeeping under test, no processes
    sup.step_bounds = None
    sup.state_key = b"k" * 32
    sup._clock_control_starts = 0
    return sup


def _bounds(steps: int, total: float, over: bool) -> SteeringBounds:
    return SteeringBounds(steps=steps, accumulated_steps_s=total, startup_over=over)


def test_bounds_are_taken_from_clock_control_and_never_lowered() -> None:
    assert SteeringBounds.TYPE in CHILD_ACCEPTS
    sup = _supervisor()
    cc = Child(WorkerSpec("clock-control", "clock-control", "f"), "nobody")
    sup._note_bounds(cc, _bounds(1, 0.05, True))
    assert sup.step_bounds == StepBounds(1, 0.05, True)
    sup._note_bounds(cc, _bounds(0, 0.0, False))  # a lower report lowers nothing
    assert sup.step_bounds == StepBounds(1, 0.05, True)
    sup._note_bounds(cc, _bounds(2, 0.5, False))
    assert sup.step_bounds == StepBounds(2, 0.5, True)


def test_bounds_from_any_other_child_are_ignored() -> None:
    sup = _supervisor()
    for role in ("ptp", "ntp", "server", "metrics"):
        worker = Child(WorkerSpec(f"{role}:x", role, "f"), "nobody")  # type: ignore[arg-type]
        sup._note_bounds(worker, _bounds(5, 1.0, True))
    assert sup.step_bounds is None


def test_a_forked_clock_control_is_handed_the_key_and_the_latest_bounds() -> None:
    sup = _supervisor()
    ran: list[handover.Handover | None] = []

    class Setup:
        def run_child(self, spec: WorkerSpec, link_fd: int, keep: list[int]) -> None:
            ran.append(handover.take())

    sup.setup = Setup()  # type: ignore[assignment]
    spec = WorkerSpec("clock-control", "clock-control", "f")
    sup._clock_control_body(spec, [])(3)
    sup.step_bounds = StepBounds(1, 0.05, True)
    sup._clock_control_body(spec, [])(3)
    first, second = ran
    assert first is not None and second is not None
    assert first.first_start and first.bounds is None and first.state_key == sup.state_key
    assert not second.first_start and second.bounds == StepBounds(1, 0.05, True)
    handover.give(None)
