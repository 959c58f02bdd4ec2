"""State machines whose transitions are data: a table, and one function that follows it.

A machine is an enum of states, an enum of events and a mapping
``{(state, event): next_state}``. :func:`transition` looks the pair up and raises
:class:`IllegalTransition` for a pair the table does not list, so a caller that
assigns the result changes nothing on an illegal event. Tests walk each table:
every listed pair goes where it says, every other pair raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

__all__ = ["IllegalTransition", "Table", "transition"]

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)

Table = Mapping[tuple[S, E], S]


class IllegalTransition(ValueError):
    """An event that the machine's table does not allow in its current state."""

    def __init__(self, machine: str, state: Enum, event: Enum) -> None:
        super().__init__(f"{machine}: event {event.value!r} is not allowed in state "
                         f"{state.value!r}")
        self.machine = machine
        self.state = state
        self.event = event


def transition(table: Mapping[tuple[S, E], S], state: S, event: E, machine: str) -> S:
    """The state after ``event`` in ``state``; raises IllegalTransition if not in ``table``."""
    try:
        return table[(state, event)]
    except KeyError:
        raise IllegalTransition(machine, state, event) from None
