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
from ntpd_py.ipc.channels import MemoryHub
from ntpd_py.ipc.unix_control import UnixControlServer

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
    cc, clock = build_clock_control(config, hub.router("bus"), hub.pub("state"), control, None,
                                    logging.getLogger("clock-control"))
    now = clock.now()
    cc.set_sources(list(source_set(config, setup.specs).sources), now)
    tasks: list[Any] = [cc, _ProcessInfoTask(cc, setup)]
    sim = clock if config.daemon.clock == "simulated" else None
    for spec in setup.specs:
        worker_log = logging.getLogger(spec.worker_id)
        bus = hub.dealer("bus", spec.worker_id.encode())
        if isinstance(spec.source, PtpSourceConfig):
            sim_device = None
            if sim is not None:
                from ntpd_py.workers.sim_phc import SimPhcDevice
                from ntpd_py.workers.sim_world import current_phc

                path = spec.source.path
                sim_device = SimPhcDevice(path, sim, config.daemon.simulation, current_phc(path))
            tasks.append(PtpTask(source=spec.source, worker_id=spec.worker_id, bus=bus,
                                 link=None, log=worker_log, sim_device=sim_device))
        elif isinstance(spec.source, ServerSourceConfig | PoolSourceConfig):
            tasks.append(NtpTask(config=config, source=spec.source, worker_id=spec.worker_id,
                                 peer=spec.peer or spec.source.address, bus=bus, link=None,
                                 log=worker_log, sim=sim))
        elif spec.role == "metrics":
            log.warning("the metrics exporter needs its own process (an HTTP thread); it is "
                        "not started in --single-process mode")
        elif spec.role == "server":
            sockets = [(server, socket.socket(fileno=fd))
                       for server, fd in zip(spec.servers, setup.server_fds[spec.server_index],
                                             strict=True)]
            tasks.append(ServerTask(config=config, sockets=sockets, worker_id=spec.worker_id,
                                    bus=bus, state_feed=hub.sub("state"), link=None,
                                    log=worker_log))
    return tasks, clock, control


def run_single_process(config_path: str, clock_name: str | None, log: logging.Logger) -> int:
    try:
        setup = prepare(config_path, clock_name, log, single_process=True)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("%s", issue.render())
        return 78
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    from ntpd_py.workers.clock_control import PanicExit
    from ntpd_py.workers.runtime import run_poll

    stop = _Stop()

    def on_signal(signum: int, frame: object) -> None:
        stop.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("single-process mode (pid %d): no privilege separation, no ZeroMQ", os.getpid())
    # One process does every role's work: no per-role system-call filter can fit it.
    log.info("single-process mode: no seccomp filter ([daemon] seccomp applies to `run` only)")
    tasks, clock, control = _tasks(setup, log)
    try:
        run_poll(tasks, clock, stop)
    except PanicExit as exc:
        return exc.code
    finally:
        tasks[0].save(clock.now(), force=True)
        control.close()
        setup.cleanup()
    log.info("stopped")
    return 0
