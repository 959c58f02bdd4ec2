"""What a configuration reload changes: a pure diff of two sets of WorkerSpecs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ntpd_py.core.worker_spec import WorkerSpec

__all__ = ["ReloadPlan", "plan_reload"]


@dataclass(frozen=True)
class ReloadPlan:
    stop: tuple[str, ...]  # worker ids to stop
    start: tuple[WorkerSpec, ...]  # specs to start (new, or changed and restarted)
    keep: tuple[str, ...]  # unchanged, left running

    @property
    def changed(self) -> bool:
        return bool(self.stop or self.start)


def plan_reload(old: Iterable[WorkerSpec], new: Iterable[WorkerSpec]) -> ReloadPlan:
    before = {s.worker_id: s for s in old}
    after = {s.worker_id: s for s in new}
    stop = [
        wid
        for wid, spec in before.items()
        if wid not in after or after[wid].fingerprint != spec.fingerprint
    ]
    start = [
        spec
        for wid, spec in after.items()
        if wid not in before or before[wid].fingerprint != spec.fingerprint
    ]
    keep = [wid for wid in before if wid in after and wid not in stop]
    return ReloadPlan(tuple(stop), tuple(start), tuple(keep))
