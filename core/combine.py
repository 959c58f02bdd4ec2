"""Combination: one estimate of the local clock's offset and frequency from the selected sources.

Each selected source's filter estimate (at the same instant) is merged by
inverse variance (the Kalman merge of :func:`.kalman.merge`), most precise
first. A server's root dispersion is added to its offset variance (unless
``ignore-server-dispersion``), so a source far from its primary reference
counts less, and so is the possible bias of a two-way path (delay²/12).
The system's stratum, reference id and root delay come from the most
precise source; the root dispersion is the combined offset uncertainty
(which includes the servers' dispersion); the leap indicator is the majority
vote of :func:`.leap.leap_vote`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .events import LeapIndicator
from .kalman import Prediction, merge
from .leap import leap_vote

__all__ = ["Combined", "SourceEstimate", "combine"]

# NTP's MAXDISP: a dispersion beyond it means "no use", and squaring 1e308 overflows
# (OverflowError), which once let one bad sample stop clock-control.
MAX_DISPERSION_S = 16.0


@dataclass(frozen=True, slots=True)
class SourceEstimate:
    """One selected source's filter estimate at the combination instant, with its metadata."""

    source_id: str
    estimate: Prediction
    root_delay_s: float  # the source's root delay plus our delay to it
    root_dispersion_s: float
    stratum: int
    reference_id: int
    leap: LeapIndicator
    # Round-trip delay of a two-way (NTP) measurement: an unknown path asymmetry can
    # bias it by up to delay/2, which the filter's noise estimate cannot see.
    two_way_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Combined:
    estimate: Prediction
    order: tuple[str, ...]  # most precise first
    stratum: int
    reference_id: int
    root_delay_s: float
    root_dispersion_s: float
    leap: LeapIndicator


def combine(sources: Sequence[SourceEstimate], *, ignore_server_dispersion: bool) -> Combined:
    """Merge ``sources`` (at least one, all estimates at the same instant)."""
    if not sources:
        raise ValueError("combine() needs at least one source")
    widened = []
    for source in sources:
        est = source.estimate
        p00 = est.p00
        if not ignore_server_dispersion:
            dispersion = min(source.root_dispersion_s, MAX_DISPERSION_S)
            p00 = p00 + dispersion * dispersion
        if source.two_way_delay_s > 0.0:
            # The asymmetry bias taken as uniform in [-delay/2, delay/2]: variance d²/12.
            # It keeps a precise PHC from being pulled toward a biased NTP path.
            delay = min(source.two_way_delay_s, MAX_DISPERSION_S)
            p00 = p00 + delay * delay / 12.0
        if p00 != est.p00:
            # Built directly: dataclasses.replace was a third of a sample's cost here.
            est = Prediction(est.t_ns, est.offset, est.freq, p00, est.p01, est.p11)
        widened.append((p00, source.source_id, est, source))
    widened.sort(key=lambda item: (item[0], item[1]))
    result = widened[0][2]
    for _, _, est, _ in widened[1:]:
        result = merge(result, est)
    best = widened[0][3]
    return Combined(
        estimate=result,
        order=tuple(item[1] for item in widened),
        stratum=min(best.stratum + 1, 16),
        reference_id=best.reference_id,
        root_delay_s=best.root_delay_s,
        root_dispersion_s=math.sqrt(max(result.p00, 0.0)),
        leap=leap_vote([s.leap for s in sources]),
    )
