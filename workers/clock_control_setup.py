"""Build clock-control's task: backend, clock reader, saved state, algorithm.

Nothing read back can stop clock-control: a saved state that fails
validation, or whose restore raises, is discarded with one warning naming the
file and the field, and clock-control starts without it; the step bounds
the supervisor handed over (:mod:`.handover`) apply either way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ntpd_py.core.config import Config
from ntpd_py.core.controller import ClockController
from ntpd_py.core.controller_state import StateError, StepBounds, validate_saved_state
from ntpd_py.core.saved_state import DriftPrior, SavedState
from ntpd_py.ipc.channels import Channel
from ntpd_py.ipc.link import Link
from ntpd_py.plumbing.handover import take
from ntpd_py.plumbing.scheduler import Now, SystemClockReader
from ntpd_py.plumbing.simclock import SimClock

from .clock_backends import ClockBackend, ObserveClock, SimulatedClock, SystemClock
from .clock_control import ClockControlTask
from .state_store import StateStore

__all__ = ["ObserveReader", "build_clock_control", "make_backend"]


class ObserveReader:
    """The virtual clock the observe backend steers: the real clock plus its correction."""

    def __init__(self, backend: ObserveClock) -> None:
        self._backend = backend
        self._real = SystemClockReader()

    def now(self) -> Now:
        now = self._real.now()
        return Now(now.mono_ns, now.real_ns + self._backend.correction_ns(now.mono_ns))

    def realtime_from_kernel_ns(self, kernel_real_ns: int) -> int:
        return kernel_real_ns


def make_backend(config: Config) -> tuple[ClockBackend, Any]:
    """The backend named by `[daemon] clock` and the clock reader that goes with it."""
    if config.daemon.clock == "simulated":
        from ntpd_py.plumbing.sim_world import current_clock_model

        sim = SimClock(os.path.join(config.daemon.runtime_dir, "sim-clock"), writable=True,
                       model=current_clock_model())
        return SimulatedClock(sim), sim
    if config.daemon.clock == "observe":
        observe = ObserveClock()
        return observe, ObserveReader(observe)
    return SystemClock(), SystemClockReader()


def _initial_state(
    store: StateStore, now: Now, config: Config, log: logging.Logger
) -> SavedState | DriftPrior | None:
    quick = store.load_quick(now.mono_ns)
    if quick is not None:
        try:
            state = validate_saved_state(quick, config.synchronization)
        except StateError as exc:
            log.warning("discarding %s: field %s: %s", store.quick_path, exc.field, exc.problem)
        else:
            log.info("resuming from the saved state of the previous clock-control")
            return state
    from ntpd_py.core.drift import DriftFileError, parse_drift

    text = store.load_drift_text()
    if text is None:
        return None
    try:
        frequency, uncertainty = parse_drift(text)
    except DriftFileError as exc:
        log.warning("ignoring drift file %s: %s", store.drift_path, exc)
        return None
    limit = config.synchronization.algorithm.maximum_frequency_steer
    if abs(frequency) > limit:
        log.warning("ignoring drift file %s: frequency %+.3f ppm is beyond "
                    "[synchronization.algorithm] maximum-frequency-steer (%g ppm)",
                    store.drift_path, frequency * 1e6, limit * 1e6)
        return None
    log.info(
        "drift file %s: frequency %+.3f ppm ± %.3f ppm",
        store.drift_path,
        frequency * 1e6,
        uncertainty * 1e6,
    )
    return DriftPrior(frequency, uncertainty)


def _controller(
    config: Config,
    backend: ClockBackend,
    clock: Any,
    saved: SavedState | DriftPrior | None,
    bounds: StepBounds | None,
    path: str,
    log: logging.Logger,
) -> ClockController:
    """The algorithm resumed from ``saved``, or started afresh if resuming raises anything."""
    restore = getattr(backend, "restore_state", None)
    try:
        if isinstance(saved, SavedState) and restore is not None:
            restore(saved.backend)
        now = clock.now()
        return ClockController(config.synchronization, now_mono_ns=now.mono_ns,
                               now_real_ns=now.real_ns, saved=saved, bounds=bounds)
    except Exception as exc:  # whatever it is, the saved state is at fault
        if saved is None:
            raise
        log.warning("discarding %s: resuming from it failed: %s: %s", path,
                    type(exc).__name__, exc)
    if restore is not None:
        restore(None)
    now = clock.now()
    return ClockController(config.synchronization, now_mono_ns=now.mono_ns,
                           now_real_ns=now.real_ns, bounds=bounds)


def build_clock_control(
    config: Config,
    bus: Channel,
    pub: Channel,
    control: Channel,
    link: Link | None,
    log: logging.Logger,
) -> tuple[ClockControlTask, Any]:
    from ntpd_py.core.drift import encode_drift

    backend, clock = make_backend(config)
    handover = take()
    store = StateStore(config.daemon.runtime_dir, config.daemon.state_dir, log,
                       key=handover.state_key if handover else None,
                       first_start=handover.first_start if handover else True)
    bounds = handover.bounds if handover else None
    saved = _initial_state(store, clock.now(), config, log)
    controller = _controller(config, backend, clock, saved, bounds, store.quick_path, log)
    if controller.rejected_state is not None:  # validated above already; never expected
        log.warning("discarding %s: %s", store.quick_path, controller.rejected_state)
    if bounds is not None:
        log.info("step bounds kept by the supervisor: %d step(s), %.6f s stepped, "
                 "start-up %s", bounds.steps, bounds.accumulated_s,
                 "over" if bounds.startup_over else "not over")
    backend.take_control()
    task = ClockControlTask(
        controller=controller,
        backend=backend,
        bus=bus,
        pub=pub,
        control=control,
        link=link,
        store=store,
        log=log,
        drift_text=encode_drift,
    )
    task.panic_action = config.daemon.panic_action
    task.warn_on_jump = config.synchronization.warn_on_jump
    log.info("clock backend: %s", backend.name)
    return task, clock
