"""The child-process state machine: its table is walked pair by pair."""

from __future__ import annotations

import itertools

import pytest
from ntpd_py.core.fsm import IllegalTransition, transition
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.supervisor.children import CHILD_TRANSITIONS, Child, ChildEvent, ChildState


def _child(state: ChildState) -> Child:
    child = Child(spec=WorkerSpec("ntp:127.0.0.1:123", "ntp", "x"), user="nobody")
    child.state = state
    return child


@pytest.mark.parametrize(("pair", "after"), sorted(CHILD_TRANSITIONS.items()))
def test_every_listed_transition_goes_where_the_table_says(
        pair: tuple[ChildState, ChildEvent], after: ChildState) -> None:
    state, event = pair
    child = _child(state)
    assert child.fire(event) is after
    assert child.state is after


def test_every_unlisted_pair_raises_and_changes_nothing() -> None:
    illegal = [(s, e) for s, e in itertools.product(ChildState, ChildEvent)
               if (s, e) not in CHILD_TRANSITIONS]
    assert illegal  # the table is not "anything goes"
    for state, event in illegal:
        child = _child(state)
        with pytest.raises(IllegalTransition, match=event.value):
            child.fire(event)
        assert child.state is state


def test_a_life_restart_then_stop() -> None:
    child = _child(ChildState.STOPPED)
    for event, expected in [
        (ChildEvent.SPAWNED, ChildState.STARTING), (ChildEvent.STARTED, ChildState.RUNNING),
        (ChildEvent.CRASHED, ChildState.BACKOFF), (ChildEvent.SPAWNED, ChildState.STARTING),
        (ChildEvent.STARTED, ChildState.RUNNING), (ChildEvent.STOP, ChildState.STOPPING),
        (ChildEvent.EXITED, ChildState.STOPPED),
    ]:
        assert child.fire(event) is expected


def test_the_states_shown_to_users_are_the_old_strings() -> None:
    # ntpctl workers, the wire (ProcessInfo.state) and notify.py compare these strings
    assert {s.value for s in ChildState} == {"stopped", "starting", "running", "backoff",
                                            "stopping"}
    assert _child(ChildState.BACKOFF).info().state == "backoff"


def test_the_generic_helper_names_the_machine_state_and_event() -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(CHILD_TRANSITIONS, ChildState.STOPPED, ChildEvent.CRASHED, "ntp:x")
    assert str(caught.value) == "ntp:x: event 'crashed' is not allowed in state 'stopped'"
    assert caught.value.state is ChildState.STOPPED
