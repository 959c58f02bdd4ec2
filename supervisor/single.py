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
from typing import Any

from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.channels import MemoryHub, SlotRouter
from ntpd_py.ipc.unix_control import UnixControlServer
from ntpd_py.plumbing.logutil import RateLimitedLog

from .setup import DaemonSetup
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
        self._cc.set_processes([info], now.mono_ns)
        self._next = now.mono_ns + 1_000_000_000


class _NtsKeysTask:
    """Rotates the NTS cookie keys when due and gives them to the server tasks (what the
    supervisor's loop and the servers' links do in the multi-process daemon)."""

    name = "nts-keys"

    def __init__(self, setup: DaemonSetup, servers: list[Any]) -> None:
        self._setup, self._servers, self._next = setup, servers, 0

    def pollables(self) -> list[Any]:
        return []

    def next_deadline_ns(self) -> int:
        return self._next

    def step(self, now: Any) -> None:
        keys = self._setup.nts_keys
        if keys is not None and keys.rotate_if_due():
            for server in self._servers:
                server.install_keyset(keys.keyset)
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
        from ntpd_py.core.exit_codes import PanicExit

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
    from ntpd_py.workers.registry import ROLES, STATE_ROLES, Wiring, build_hub, build_task

    config = setup.config
    hub = MemoryHub()
    control = UnixControlServer(config.control_socket_path(),
                                config.observability.observation_permissions)
    bus = SlotRouter()
    cc, clock = build_hub(config, bus, hub.pub("state"), control,
                          logging.getLogger("clock-control"))
    now = clock.now()
    sources = source_set(config, setup.specs)
    cc.set_sources(list(sources.sources), now, sources.server_workers, sources.server_listens)
    tasks: list[Any] = [cc, _ProcessInfoTask(cc, setup)]
    if setup.nts_keys is not None:
        from ntpd_py.plumbing.nts_handover import NtsHandover, give

        give(NtsHandover(setup.nts_keys.current()))  # the server tasks built below take it
    for spec in setup.specs:
        role = ROLES[spec.role]
        if role.build is None:
            continue  # the hub, built above
        if not role.in_single_process:
            log.warning("%s; it is not started in --single-process mode", role.why_not_single)
            continue
        # One in-memory path per worker, as the daemon's per-slot endpoints: the
        # sender of a frame is the path it came by.
        name = f"bus/{spec.worker_id}"
        bus.add(spec.worker_id, hub.router(name), wants_state=spec.role in STATE_ROLES)
        wiring = Wiring(config=config, spec=spec, log=logging.getLogger(spec.worker_id),
                        clock=clock, bus=hub.dealer(name, spec.worker_id.encode()), link=None,
                        fds=_fds_for(setup, spec))
        tasks.append(build_task(role, wiring))
    servers = [t for t in tasks if hasattr(t, "install_keyset")]
    if setup.nts_keys is not None and servers:
        tasks.append(_NtsKeysTask(setup, servers))
    return tasks, clock, control


def _fds_for(setup: DaemonSetup, spec: WorkerSpec) -> list[int]:
    # The PHC is opened by the PTP task itself here (one process, one set of rights).
    return [] if spec.role == "ptp" else setup.fds_for(spec)


def run_single_process(setup: DaemonSetup, log: logging.Logger) -> int:
    """Run every role of a prepared setup in this process until SIGTERM/SIGINT."""
    from ntpd_py.core.exit_codes import PanicExit
    from ntpd_py.plumbing.scheduler import run_poll

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
