"""`ntpd-py run --single-process`: every loop in one process, no ZeroMQ, no threads.

The same clock-control, PTP, NTP and server tasks as the multi-process
daemon, wired over in-memory channels (:class:`ipc.channels.MemoryHub`) and
run by the ``select.poll`` scheduler. For containers that want one process,
and for LD_PRELOAD clock/network simulators (which see select/poll and UDP
sockets, but not epoll, ZeroMQ, threads or child processes). There is no
privilege separation in this mode: the one process keeps what it was given.
`ntpctl` reaches it through a plain SOCK_SEQPACKET control socket.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

from ntpd_py.core.config import PoolSourceConfig, PtpSourceConfig, ServerSourceConfig
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CONFIG
from ntpd_py.ipc.channels import MemoryHub, SlotRouter
from ntpd_py.ipc.unix_control import UnixControlServer
from ntpd_py.plumbing.logutil import RateLimitedLog

from .setup import DaemonSetup, StartupError, prepare
from .sources import source_set

__all__ = ["run_single_process"]


class _ProcessInfoTask:
    """Keeps clock-control's process table (one process here) current for ntpctl."""

    name = "process-info"

    def __init__(self, cc: Any, setup: DaemonSetup) -> None:
        self._cc, self._setup, self._next = cc, setup, 0

    def pollables(self) -> list[Any]:
        return []

    def next_deadline_ns(self) -> int:
        return self._next

    def step(self, now: Any) -> None:
        info = self._setup.self_info().model_copy(update={"worker_id": "ntpd-py",
                                                          "state": "single-process"})
        self._cc.processes = [info]
        self._next = now.mono_ns + 1_000_000_000


HOLD_AFTER_FAILURE_NS = 1_000_000_000


class _Contained:
    """One task whose `step` may raise: the exception is logged (rate-limited), counted
    under the task's id in clock-control's drop counters, and the loop goes on.

    In the multi-process daemon a worker that raises dies alone and is restarted; here
    every loop shares the process, so one worker's bad sample (a SampleMsg that fails its
    own validation, say) must not end the daemon. Only PanicExit ends it, as it should.
    """

    def __init__(self, task: Any, cc: Any, limited: RateLimitedLog) -> None:
        self.task, self._cc, self._limited = task, cc, limited
        self.name = task.name
        self._held_until: int | None = None  # after a failure, like a restart backoff

    def pollables(self) -> Any:
        return [] if self._held_until is not None else self.task.pollables()

    def next_deadline_ns(self) -> int | None:
        if self._held_until is not None:
            return self._held_until
        deadline: int | None = self.task.next_deadline_ns()
        return deadline

    def step(self, now: Any) -> None:
        from ntpd_py.workers.clock_control import PanicExit

        if self._held_until is not None:
            if now.mono_ns < self._held_until:
                return
            self._held_until = None
        try:
            self.task.step(now)
        except PanicExit:
            raise
        except Exception as exc:
            worker_id = str(getattr(self.task, "worker_id", self.name))
            reason = f"error:{type(exc).__name__}"
            self._cc.guard.drop(worker_id, reason)
            self._limited.log(logging.ERROR, f"{worker_id}:{reason}", now.mono_ns,
                              "%s raised %s: %s (contained; the other loops go on)",
                              worker_id, type(exc).__name__, exc)
            # A task that fails before rescheduling itself would otherwise be due at once,
            # again and again: hold it back a second (the other loops keep running).
            self._held_until = now.mono_ns + HOLD_AFTER_FAILURE_NS


class _Stop:
    def __init__(self) -> None:
        self.stop = False

    def __call__(self) -> bool:
        return self.stop


def _tasks(setup: DaemonSetup, log: logging.Logger) -> tuple[list[Any], Any, Any]:
    from ntpd_py.workers.clock_control_setup import build_clock_control
    from ntpd_py.workers.ntp import NtpTask
    from ntpd_py.workers.ptp import PtpTask
    from ntpd_py.workers.server import ServerTask

    config = setup.config
    hub = MemoryHub()
    control = UnixControlServer(config.control_socket_path(),
                                config.observability.observation_permissions)
    bus = SlotRouter()
    cc, clock = build_clock_control(config, bus, hub.pub("state"), control, None,
                                    logging.getLogger("clock-control"))
    now = clock.now()
    sources = source_set(config, setup.specs)
    cc.set_sources(list(sources.sources), now, sources.server_workers, sources.server_listens)
    tasks: list[Any] = [cc, _ProcessInfoTask(cc, setup)]
    sim = clock if config.daemon.clock == "simulated" else None
    for spec in setup.specs:
        worker_log = logging.getLogger(spec.worker_id)
        if spec.role not in ("ptp", "ntp", "server"):
            if spec.role == "metrics":
                log.warning("the metrics exporter needs its own process (an HTTP thread); "
                            "it is not started in --single-process mode")
            continue
        # One in-memory path per worker, as the daemon's per-slot endpoints: the
        # sender of a frame is the path it came by.
        name = f"bus/{spec.worker_id}"
        bus.add(spec.worker_id, hub.router(name), wants_state=spec.role == "server")
        worker_bus = hub.dealer(name, spec.worker_id.encode())
        if isinstance(spec.source, PtpSourceConfig):
            sim_device = None
            if sim is not None:
                from ntpd_py.plumbing.sim_world import current_phc
                from ntpd_py.workers.sim_phc import SimPhcDevice

                path = spec.source.path
                sim_device = SimPhcDevice(path, sim, config.daemon.simulation, current_phc(path))
            tasks.append(PtpTask(source=spec.source, worker_id=spec.worker_id, bus=worker_bus,
                                 link=None, log=worker_log, sim_device=sim_device))
        elif isinstance(spec.source, ServerSourceConfig | PoolSourceConfig):
            tasks.append(NtpTask(config=config, source=spec.source, worker_id=spec.worker_id,
                                 peer=spec.peer or spec.source.address, bus=worker_bus, link=None,
                                 log=worker_log, sim=sim))
        elif spec.role == "server":
            sockets = [(server, socket.socket(fileno=fd))
                       for server, fd in zip(spec.servers, setup.server_fds[spec.server_index],
                                             strict=True)]
            tasks.append(ServerTask(config=config, sockets=sockets, worker_id=spec.worker_id,
                                    bus=worker_bus, state_feed=worker_bus, link=None,
                                    log=worker_log))
    return tasks, clock, control


def run_single_process(config_path: str, clock_name: str | None, log: logging.Logger) -> int:
    try:
        setup = prepare(config_path, clock_name, log, single_process=True)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("%s", issue.render())
        return EX_CONFIG
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    from ntpd_py.plumbing.scheduler import run_poll
    from ntpd_py.workers.clock_control import PanicExit

    stop = _Stop()

    def on_signal(signum: int, frame: object) -> None:
        stop.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("single-process mode (pid %d): no privilege separation, no ZeroMQ", os.getpid())
    # One process does every role's work: no per-role system-call filter can fit it.
    log.info("single-process mode: no seccomp filter ([daemon] seccomp applies to `run` only)")
    tasks, clock, control = _tasks(setup, log)
    limited = RateLimitedLog(log)
    try:
        run_poll([_Contained(task, tasks[0], limited) for task in tasks], clock, stop)
    except PanicExit as exc:
        return exc.code
    finally:
        tasks[0].save(clock.now(), force=True)
        control.close()
        setup.cleanup()
    log.info("stopped")
    return 0
