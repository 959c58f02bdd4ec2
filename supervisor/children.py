"""The supervisor's record of one child process, and how it is forked."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import psutil
from ntpd_py.core.fsm import transition
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.link import Link, socketpair
from ntpd_py.ipc.messages import (
    DeviceRequest,
    Heartbeat,
    PeerFailed,
    ProcessInfo,
    SteeringBounds,
)

from .policy import RestartState

__all__ = [
    "CHILD_ACCEPTS",
    "CHILD_TRANSITIONS",
    "Child",
    "ChildEvent",
    "ChildMessage",
    "ChildState",
    "describe_exit",
]


class ChildState(StrEnum):
    """Where a child process is in its life; the values are what `ntpctl workers` shows."""

    STOPPED = "stopped"  # not running and not to be restarted (never started, or stopped)
    STARTING = "starting"  # forked, its first act not yet confirmed
    RUNNING = "running"
    BACKOFF = "backoff"  # exited unexpectedly; restarted at restart_at_ns
    STOPPING = "stopping"  # SIGTERM sent, waiting for it to exit


class ChildEvent(StrEnum):
    SPAWNED = "spawned"  # fork returned in the parent
    STARTED = "started"  # the supervisor handed over what the child needs
    STOP = "stop"  # the supervisor asks it to stop (SIGTERM) or forgets a dead one
    EXITED = "exited"  # reaped while it was expected to stop, or while ntpd-py stops
    CRASHED = "crashed"  # reaped while it should have kept running: restart later
    GAVE_UP = "gave-up"  # reaped with a status that must not be restarted (panic)


_S, _E = ChildState, ChildEvent
# (state, event) -> next state. Anything not listed is a supervisor bug and raises.
CHILD_TRANSITIONS: dict[tuple[ChildState, ChildEvent], ChildState] = {
    (_S.STOPPED, _E.SPAWNED): _S.STARTING,
    (_S.BACKOFF, _E.SPAWNED): _S.STARTING,
    (_S.STARTING, _E.STARTED): _S.RUNNING,
    # Stopping: a live child is signalled; one without a process is just stopped.
    (_S.STARTING, _E.STOP): _S.STOPPING,
    (_S.RUNNING, _E.STOP): _S.STOPPING,
    (_S.BACKOFF, _E.STOP): _S.STOPPED,
    (_S.STOPPED, _E.STOP): _S.STOPPED,
    (_S.STOPPING, _E.STOP): _S.STOPPING,
    (_S.STOPPING, _E.EXITED): _S.STOPPED,
    (_S.STARTING, _E.EXITED): _S.STOPPED,
    (_S.RUNNING, _E.EXITED): _S.STOPPED,
    (_S.STARTING, _E.CRASHED): _S.BACKOFF,
    (_S.RUNNING, _E.CRASHED): _S.BACKOFF,
    (_S.STARTING, _E.GAVE_UP): _S.STOPPED,
    (_S.RUNNING, _E.GAVE_UP): _S.STOPPED,
}

# What a child may send its supervisor: ChildMessage for the handler's exhaustive match,
# CHILD_ACCEPTS (made from it) for the link's decoder. STEERING_BOUNDS is only honoured
# from clock-control's link (supervisor/main.py).
ChildMessage = Heartbeat | DeviceRequest | PeerFailed | SteeringBounds
CHILD_ACCEPTS = {cls.TYPE for cls in (Heartbeat, DeviceRequest, PeerFailed, SteeringBounds)}


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        if sig == signal.SIGSYS:
            # The kernel kills with SIGSYS a process whose seccomp filter refused a call.
            return "killed by seccomp (SIGSYS)"
        return f"killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"exited with status {code}"


@dataclass
class Child:
    spec: WorkerSpec
    user: str
    pid: int | None = None
    link: Link | None = None
    state: ChildState = ChildState.STOPPED
    restart: RestartState = field(default_factory=RestartState)
    restart_at_ns: int | None = None
    last_heartbeat_ns: int = 0
    started_at: float | None = None
    last_exit: str = ""
    last_status: int | None = None
    _proc: psutil.Process | None = None

    def spawn(self, now_ns: int, body: Callable[[int], None], keep_fds: list[int]) -> None:
        """Fork; the child runs `body(link_fd)` and never returns here.

        Raises IllegalTransition, before forking, if the child may not be started now."""
        starting = transition(CHILD_TRANSITIONS, self.state, ChildEvent.SPAWNED,
                              self.spec.worker_id)
        parent_end, child_end = socketpair()
        # Objects that exist now are shared copy-on-write with the child; keep the
        # child's garbage collector from walking (and so copying) them.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            os.set_inheritable(child_end.fileno(), True)
            signal.set_wakeup_fd(-1)
            body(child_end.detach())
            os._exit(70)  # body must not return
        child_end.close()
        self.pid = pid
        self.link = Link(parent_end, CHILD_ACCEPTS)
        self.state = starting
        self.last_heartbeat_ns = now_ns
        self.started_at = time.time()
        self.restart.on_start(now_ns)
        self.restart_at_ns = None
        self._proc = None

    def fire(self, event: ChildEvent) -> ChildState:
        """Follow CHILD_TRANSITIONS; an illegal event raises and leaves the state as it was."""
        self.state = transition(CHILD_TRANSITIONS, self.state, event, self.spec.worker_id)
        return self.state

    def exited(self, status: int) -> str:
        self.last_status = status
        self.last_exit = describe_exit(status)
        self.pid = None
        if self.link is not None:
            self.link.close()
            self.link = None
        return self.last_exit

    def signal(self, sig: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def info(self) -> ProcessInfo:
        rss = cpu = cpu_seconds = None
        if self.pid is not None:
            try:
                if self._proc is None or self._proc.pid != self.pid:
                    self._proc = psutil.Process(self.pid)
                    self._proc.cpu_percent(None)
                rss = self._proc.memory_info().rss
                cpu = self._proc.cpu_percent(None)
                times = self._proc.cpu_times()
                cpu_seconds = times.user + times.system
            except psutil.Error:
                self._proc = None
        uptime = time.time() - self.started_at if self.pid and self.started_at else None
        return ProcessInfo(
            worker_id=self.spec.worker_id,
            role=self.spec.role,
            pid=self.pid,
            user=self.user,
            state=self.state.value,
            uptime_s=uptime,
            restarts=self.restart.restarts,
            rss_bytes=rss,
            cpu_percent=cpu,
            last_exit=self.last_exit,
            cpu_seconds=cpu_seconds,
            link_malformed=self.link.malformed if self.link is not None else 0,
            link_dropped=self.link.dropped if self.link is not None else 0,
        )
