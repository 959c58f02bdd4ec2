"""The world of `ntpd-py simulate`, for the process tree of `clock = "simulated"`.

When `[daemon.simulation] scenario` names a scenario file, the supervisor
loads it once and every child inherits this object across fork: the local
clock's free-running error (offset, frequency, random-walk wander,
temperature swing) and each PHC's bias, noise and read failures come from
the scenario's own models (:mod:`ntpd_py.core.sim`), which are pure functions
of (seed, name, true time, read index). Every process therefore sees the
same world; only the corrections clock-control applies live in the shared
clock file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams
from ntpd_py.core.sim.phc import PhcModel
from ntpd_py.core.sim.scenario import Scenario, SimPtpSource
from ntpd_py.core.sim.world import phc_params

__all__ = ["CURRENT", "SimWorld", "current_clock_model", "current_phc", "world_from_scenario"]


@dataclass
class SimWorld:
    seed: int
    clock: LocalClockModel
    phcs: dict[str, PhcModel] = field(default_factory=dict)


def world_from_scenario(scenario: Scenario, seed: int | None = None) -> SimWorld:
    seed = scenario.scenario.seed if seed is None else seed
    lc = scenario.local_clock
    clock = LocalClockModel(LocalClockParams(
        offset_s=lc.offset, frequency=lc.frequency, wander=lc.wander,
        temperature_amplitude=lc.temperature_amplitude,
        temperature_period_s=lc.temperature_period), seed)
    phcs = {}
    for src in scenario.source:
        if isinstance(src, SimPtpSource):
            params = phc_params(src.sim)
            phcs[src.path] = PhcModel(src.path, params, seed)
    return SimWorld(seed, clock, phcs)


# Set by the supervisor (or single-process mode) before anything reads the
# simulated clock; children inherit it across fork.
CURRENT: SimWorld | None = None


def current_clock_model() -> LocalClockModel | None:
    return CURRENT.clock if CURRENT is not None else None


def current_phc(path: str) -> PhcModel | None:
    return CURRENT.phcs.get(path) if CURRENT is not None else None
