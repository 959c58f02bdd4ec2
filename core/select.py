"""Source selection: which sources agree on the time (interval intersection).

Each candidate is an interval ``offset ± radius`` (the radius is a multiple of
the filter's uncertainty plus a fraction of the delay, as in ntpd-rs). A sweep
over the interval ends finds the largest set of sources whose intervals share a
common point. That set is accepted only if it has at least
``minimum-agreeing-sources`` members **and** is a strict majority of the
candidates; its members are selected, every other candidate is a falseticker.
Without such a majority nothing is selected and nobody is called a falseticker
(there is no consensus on the time to judge them against).

When several disjoint regions have the same largest count (possible only when
wide intervals straddle two groups), the region whose members are the most
precise (largest sum of 1/radius^2) wins; ntpd-rs takes the lowest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "Selection", "select"]


@dataclass(frozen=True, slots=True)
class Candidate:
    source_id: str
    offset: float
    radius: float


@dataclass(frozen=True, slots=True)
class Selection:
    selected: tuple[str, ...]  # empty: no consensus
    falsetickers: tuple[str, ...]
    agreeing: int  # size of the largest agreeing set
    low: float = 0.0  # the region all selected intervals share
    high: float = 0.0

    @property
    def consensus(self) -> bool:
        return bool(self.selected)


def _regions(candidates: Sequence[Candidate]) -> tuple[int, list[tuple[float, float]]]:
    """Largest overlap count and every region where it is reached."""
    bounds: list[tuple[float, int]] = []
    for c in candidates:
        bounds.append((c.offset - c.radius, 0))  # 0 sorts before 1: touching intervals overlap
        bounds.append((c.offset + c.radius, 1))
    bounds.sort()
    best, current = 0, 0
    regions: list[tuple[float, float]] = []
    for index, (value, is_end) in enumerate(bounds):
        if is_end:
            current -= 1
            continue
        current += 1
        if current >= best:
            # The region runs to the next bound (which must be an end).
            upper = bounds[index + 1][0] if index + 1 < len(bounds) else value
            if current > best:
                best, regions = current, []
            regions.append((value, upper))
    return best, regions


def select(
    candidates: Sequence[Candidate], minimum_agreeing: int, abstaining: int = 0,
    non_voting: frozenset[str] = frozenset(),
) -> Selection:
    """Pick the agreeing sources among ``candidates`` (all usable, radius finite).

    ``abstaining`` sources cannot be judged yet (still starting up) but count
    toward the majority: at start, the first source to finish its start-up
    must not decide the time alone when others are about to disagree with it.
    ``non_voting`` candidates (PPS) take no part in the vote, as ntpd-rs keeps its
    periodic sources out of it: a pulse's whole seconds come from the voters
    (core/pps_source.py pairs each pulse with a selected source and refuses an
    ambiguous one), so it cannot disagree with them about the second, only be
    more precise within it. When the voters agree, the non-voting candidates are
    selected with them; the combination weighs each by its precision. Judged
    against the voters' interval instead, a 1 µs pulse was called a falseticker
    whenever a 500 µs GPS's filtered estimate strayed past its own 2 σ, and the
    clock followed the GPS for a while (gps-sock-pps: 6.4 µs RMS instead of 0.2 µs).
    """
    voters = [c for c in candidates if c.source_id not in non_voting]
    if voters and len(voters) < len(candidates):
        agreed = select(voters, minimum_agreeing, abstaining)
        if not agreed.consensus:
            return agreed
        joined = tuple(c.source_id for c in candidates if c.source_id in non_voting)
        return Selection((*agreed.selected, *joined), agreed.falsetickers, agreed.agreeing,
                         agreed.low, agreed.high)
    if not voters:
        return Selection((), (), 0)
    best, regions = _regions(candidates)
    if best < minimum_agreeing or 2 * best <= len(candidates) + abstaining:
        return Selection((), (), best)

    def members(region: tuple[float, float]) -> list[Candidate]:
        low, high = region
        return [c for c in candidates if c.offset - c.radius <= low and c.offset + c.radius >= high]

    def precision(region: tuple[float, float]) -> float:
        return sum(1.0 / max(c.radius, 1e-15) ** 2 for c in members(region))

    region = max(regions, key=precision) if len(regions) > 1 else regions[0]
    chosen = members(region)
    chosen_ids = {c.source_id for c in chosen}
    falsetickers = tuple(c.source_id for c in candidates if c.source_id not in chosen_ids)
    return Selection(tuple(c.source_id for c in chosen), falsetickers, len(chosen), *region)
