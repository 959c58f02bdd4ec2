"""Clock-control's decisions about its sources and a panic, as pure functions.

The clock-control worker only carries these out (sends, logs, backend calls):

- :func:`diff_sources`: what a new source set means for the algorithm and the
  rate caps (which sources start afresh, which are new, which are forgotten);
- :class:`FalsetickerJudge`: when a pool member has been a falseticker long
  enough to ask the supervisor for another member;
- :func:`on_panic`: what a refused step does under ``[daemon] panic-action``,
  and :func:`steering_allowed`, which actions still reach the clock after it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeVar

from .actions import AdvisePoll, ClockAction, Panic

__all__ = [
    "FALSETICKER_REPLACE_AFTER",
    "FalsetickerJudge",
    "PanicDecision",
    "SourceSetChange",
    "diff_sources",
    "on_panic",
    "steering_allowed",
]

FALSETICKER_REPLACE_AFTER = 60  # consecutive state updates (published about once a second)

E = TypeVar("E", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SourceSetChange:
    """What replacing the configured sources means, in the order it must be done."""

    removed: tuple[str, ...]  # gone or changed: the algorithm forgets them (and their status)
    forgotten: tuple[str, ...]  # gone for good: their rate caps and counters go too
    added: tuple[str, ...]  # new or changed: the algorithm starts them afresh


def diff_sources(old: Mapping[str, E], new: Mapping[str, E]) -> SourceSetChange:
    """Compare two source sets keyed by source id; an entry whose settings changed is
    removed and added again, so nothing learnt under the old settings is kept."""
    removed = tuple(sid for sid, entry in old.items() if new.get(sid) != entry)
    return SourceSetChange(
        removed=removed,
        forgotten=tuple(sid for sid in removed if sid not in new),
        added=tuple(sid for sid, entry in new.items() if old.get(sid) != entry),
    )


@dataclass
class FalsetickerJudge:
    """Counts, per pool member, consecutive updates in which it was a falseticker."""

    replace_after: int = FALSETICKER_REPLACE_AFTER
    streaks: dict[str, int] = field(default_factory=dict)

    def judge(self, views: Iterable[tuple[str, str]]) -> list[str]:
        """Take one update's (source id, selection mark) pairs; return the pool members to
        replace now. Only `pool:` members are judged (a configured server stays ours);
        a member is named once, when its streak reaches `replace_after`."""
        replace: list[str] = []
        for source_id, mark in views:
            if not source_id.startswith("pool:"):
                continue
            streak = self.streaks.get(source_id, 0) + 1 if mark == "x" else 0
            self.streaks[source_id] = streak
            if streak == self.replace_after:
                replace.append(source_id)
        return replace


class PanicDecision(StrEnum):
    EXIT = "exit"  # save the state and exit with the panic's status
    STOP_STEERING = "stop-steering"  # keep running, never steer again, say so once
    ALREADY_STOPPED = "already-stopped"  # steering stopped before: nothing more to do


def on_panic(panic_action: Literal["exit", "stop-steering"], steering_stopped: bool
             ) -> PanicDecision:
    if panic_action == "exit":
        return PanicDecision.EXIT
    return PanicDecision.ALREADY_STOPPED if steering_stopped else PanicDecision.STOP_STEERING


def steering_allowed(action: ClockAction, steering_stopped: bool) -> bool:
    """Whether `action` reaches the clock backend. Poll advice and panics are not clock
    actions and are handled before; after a stop-steering panic nothing else gets through."""
    if isinstance(action, AdvisePoll | Panic):
        return False
    return not steering_stopped
