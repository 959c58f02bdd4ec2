"""Walk a transition table (core/fsm.py) pair by pair: the check every machine's tests share."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from enum import Enum

import pytest
from ntpd_py.core.fsm import IllegalTransition, transition


def walk_table(table: Mapping[tuple[Enum, Enum], Enum], states: type[Enum],
               events: type[Enum]) -> list[tuple[Enum, Enum]]:
    """Every listed pair goes where the table says; every other pair raises.

    Returns the illegal pairs, for a test to check the ones that matter to it."""
    for (state, event), after in table.items():
        assert transition(table, state, event, "walk") is after
    illegal = [(s, e) for s, e in itertools.product(states, events) if (s, e) not in table]
    assert illegal, "a table that allows everything checks nothing"
    for state, event in illegal:
        with pytest.raises(IllegalTransition):
            transition(table, state, event, "walk")
    return illegal
