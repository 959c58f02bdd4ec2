"""Every role, declared once: how its task is built, what it is connected to, its limits.

A :class:`Role` names the role's task builder (one function from a
:class:`Wiring` to a task), the system-call profile its process installs,
whether it keeps CAP_SYS_TIME, and whether it can share a process with the
others. Both ways of running the daemon start roles from :data:`ROLES`:

- the multi-process daemon forks a child per worker, which runs
  :func:`role_main`: the generic :func:`worker_main` wires the task to its
  ZeroMQ slot and the supervisor link and runs the scheduler;
- ``--single-process`` calls the same builders with in-memory channels and
  runs every task in one scheduler loop (:func:`build_task`).

clock-control is the hub the others connect to, so it has its own main and its
own single-process builder (:func:`build_hub`). The supervisor reaches the
roles only through this module.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ntpd_py.core.config import (
    Config,
    NtsPoolSourceConfig,
    NtsSourceConfig,
    PoolSourceConfig,
    PpsSourceConfig,
    PtpSourceConfig,
    ServerSourceConfig,
    SockSourceConfig,
)
from ntpd_py.core.exit_codes import PanicExit
from ntpd_py.core.nts_cookies import ServerKeySet
from ntpd_py.core.worker_spec import Role as RoleName
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.channels import Channel, SlotRouter
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import BusSlot, MsgType, SourceSet
from ntpd_py.plumbing.child import ChildContext
from ntpd_py.plumbing.clocks import make_local_clock
from ntpd_py.plumbing.scheduler import LocalClock, SystemClockReader, Task, run_zmq

__all__ = ["ROLES", "PanicExit", "Role", "RoleTask", "SlotServer", "Wiring", "build_hub",
           "build_task", "role_main", "worker_main"]

CAP_SYS_TIME = 25
# Roles clock-control sends its published state to over their slot: the server answers
# with it, the pps source takes its whole seconds from it.
STATE_ROLES = ("server", "pps")


class RoleTask(Task, Protocol):
    """A role's task: a scheduler task that also releases what it opened."""

    def close(self) -> None: ...


@dataclass
class Wiring:
    """What a role's task is connected to. Each mode fills it in its own way."""

    config: Config
    spec: WorkerSpec
    log: logging.Logger
    clock: LocalClock
    # The worker's channel to clock-control: its own bus slot (sources, server), or
    # the control socket (metrics).
    bus: Channel
    link: Link | None  # the supervisor link; None in --single-process
    # Descriptors the supervisor opened for the role: the PHC, the server's UDP
    # sockets, the metrics listener.
    fds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Role:
    name: RoleName
    build: Callable[[Wiring], RoleTask] | None  # None: the hub (clock-control)
    seccomp_profile: str
    # Which endpoint `worker_main` connects as the task's bus.
    bus: Literal["slot", "control", "none"] = "slot"
    # Metrics only measures ages: CLOCK_MONOTONIC, never the simulated clock.
    system_clock_only: bool = False
    in_single_process: bool = True
    why_not_single: str = ""

    def keep_cap(self, config: Config) -> int | None:
        """The one capability this role's process keeps, if any."""
        if self.name == "clock-control" and config.daemon.clock == "system":
            return CAP_SYS_TIME
        return None


def _build_ptp(w: Wiring) -> RoleTask:
    from .ptp import PtpTask

    source = w.spec.source
    assert isinstance(source, PtpSourceConfig)
    sim_device = None
    if w.config.daemon.clock == "simulated":
        from ntpd_py.plumbing.sim_world import current_phc
        from ntpd_py.plumbing.simclock import SimClock

        from .sim_phc import SimPhcDevice

        assert isinstance(w.clock, SimClock)
        sim_device = SimPhcDevice(source.path, w.clock, w.config.daemon.simulation,
                                  current_phc(source.path))
    return PtpTask(source=source, worker_id=w.spec.worker_id, bus=w.bus, link=w.link, log=w.log,
                   inherited_fd=w.fds[0] if w.fds else None, sim_device=sim_device)


def _build_ntp(w: Wiring) -> RoleTask:
    from .ntp import NtpTask

    source = w.spec.source
    assert isinstance(source, ServerSourceConfig | PoolSourceConfig | NtsSourceConfig
                      | NtsPoolSourceConfig)
    sim = w.clock if w.config.daemon.clock == "simulated" else None
    return NtpTask(config=w.config, source=source, worker_id=w.spec.worker_id,
                   peer=w.spec.peer or source.address, bus=w.bus, link=w.link, log=w.log,
                   sim=sim)


def _build_server(w: Wiring) -> RoleTask:
    from .server import ServerTask

    sockets = [(server, socket.socket(fileno=fd))
               for server, fd in zip(w.spec.servers, w.fds, strict=True)]
    # clock-control sends the state for answering clients over the same slot.
    return ServerTask(config=w.config, sockets=sockets, worker_id=w.spec.worker_id, bus=w.bus,
                      state_feed=w.bus, link=w.link, log=w.log, keyset=_handed_keyset(w))


def _build_nts_ke(w: Wiring) -> RoleTask:
    from ntpd_py.core.config import KeysetConfig
    from ntpd_py.plumbing.nts_handover import take

    from .nts_ke import NtsKeTask

    ke = w.spec.nts_ke
    handover = take()
    keyset = _handed_keyset(w)
    if ke is None or not w.fds or handover is None or keyset is None:
        raise ValueError(f"{w.spec.worker_id}: the supervisor handed over no listener, "
                         "certificate or keyset")
    return NtsKeTask(ke=ke, keys=w.config.keyset or KeysetConfig(), worker_id=w.spec.worker_id,
                     bus=w.bus, link=w.link, log=w.log, listener=socket.socket(fileno=w.fds[0]),
                     chain_pem=handover.chain_pem, key_pem=handover.key_pem, keyset=keyset)


def _handed_keyset(w: Wiring) -> ServerKeySet | None:
    """The NTS cookie keyset the supervisor handed over at fork (plumbing/nts_handover);
    in --single-process mode, the one supervisor/single.py made."""
    from ntpd_py.core.config import KeysetConfig
    from ntpd_py.plumbing.nts_handover import take

    handover = take()
    if handover is None:
        return None
    keys = w.config.keyset or KeysetConfig()
    return ServerKeySet.from_bytes(handover.keyset, float(keys.key_rotation_interval),
                                   keys.stale_key_count)


def _build_sock(w: Wiring) -> RoleTask:
    from .sock import SockTask

    source = w.spec.source
    assert isinstance(source, SockSourceConfig)
    if not w.fds:
        raise ValueError(f"{w.spec.worker_id}: no socket was handed over (the supervisor "
                         "creates it)")
    # The supervisor bound the socket at the configured path (as root, with its mode).
    return SockTask(source=source, worker_id=w.spec.worker_id, bus=w.bus, link=w.link,
                    log=w.log, sock=socket.socket(fileno=w.fds[0]),
                    sim=w.clock if w.config.daemon.clock == "simulated" else None)


def _build_pps(w: Wiring) -> RoleTask:
    from .pps import PpsTask
    from .refclock_io import PpsDevice

    source = w.spec.source
    assert isinstance(source, PpsSourceConfig)
    # No fd: the supervisor could not open the device (its log says why); the task
    # reports the source failed instead of reading.
    device = PpsDevice(w.fds[0], source.path) if w.fds else None
    # clock-control sends its published state over the same slot (the whole seconds).
    return PpsTask(source=source, worker_id=w.spec.worker_id, bus=w.bus, link=w.link,
                   log=w.log, device=device,
                   sim=w.clock if w.config.daemon.clock == "simulated" else None)


def _build_metrics(w: Wiring) -> RoleTask:
    from .metrics import MetricsTask

    listen = w.config.observability.metrics_exporter_listen
    assert listen is not None  # the spec exists only when the exporter is configured
    listener = socket.socket(fileno=w.fds[0]) if w.fds else None
    return MetricsTask(worker_id=w.spec.worker_id, control=w.bus, link=w.link, log=w.log,
                       listen=listen,
                       listener=listener,
                       step_threshold_s=w.config.synchronization.accumulated_step_panic_threshold,
                       clock=w.clock)


ROLES: Mapping[RoleName, Role] = {
    "clock-control": Role("clock-control", None, "clock-control", bus="none"),
    "ptp": Role("ptp", _build_ptp, "ptp"),
    "ntp": Role("ntp", _build_ntp, "ntp"),
    "server": Role("server", _build_server, "server"),
    "sock": Role("sock", _build_sock, "sock"),
    "pps": Role("pps", _build_pps, "pps"),
    "nts-ke": Role("nts-ke", _build_nts_ke, "nts-ke", in_single_process=False,
                   why_not_single="the NTS-KE server runs in its own process only"),
    "metrics": Role("metrics", _build_metrics, "metrics", bus="control", system_clock_only=True,
                    in_single_process=False,
                    why_not_single="the metrics exporter needs its own process (an HTTP thread)"),
}


def build_task(role: Role, wiring: Wiring) -> RoleTask:
    """The role's task on the given wiring (both modes come through here)."""
    if role.build is None:
        raise ValueError(f"the {role.name} role is the hub: use build_hub")
    return role.build(wiring)


def worker_link(ctx: ChildContext) -> Link:
    """The child's end of the supervisor link, accepting what every worker accepts."""
    sock = socket.socket(fileno=ctx.link_fd)
    sock.setblocking(False)
    return Link(sock, {MsgType.DEVICE_REPLY, MsgType.LOG_CONTROL, MsgType.NTS_KEYSET})


def worker_main(ctx: ChildContext) -> int:
    """A worker process: connect its bus, build its task from the registry, run it."""
    import zmq
    from ntpd_py.ipc.endpoints import connect_dealer

    role = ROLES[ctx.spec.role]
    config = ctx.config
    zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    if role.bus == "control":
        # A fresh routing id per process: a restarted exporter is a new peer.
        bus = connect_dealer(zctx, config.control_socket_path(), f"{ctx.worker_id}-{os.getpid()}")
    else:
        # Our own slot endpoint (only our uid may connect): our identity on the bus.
        bus = connect_dealer(zctx, ctx.bus_path, ctx.worker_id)
    clock = SystemClockReader() if role.system_clock_only else make_local_clock(config)
    wiring = Wiring(config=config, spec=ctx.spec, log=ctx.log, clock=clock, bus=bus,
                    link=worker_link(ctx), fds=list(ctx.keep_fds))
    task = build_task(role, wiring)
    try:
        run_zmq([task], clock, ctx.stop)
    finally:
        task.close()
        bus.close()
        zctx.term()
    return 0


class SlotServer:
    """clock-control's side of the worker slots: a ROUTER on each listening socket the
    supervisor bound, added and closed as the supervisor's SourceSet says."""

    def __init__(self, zctx: Any, router: SlotRouter, log: logging.Logger) -> None:
        self._zctx, self.router, self._log = zctx, router, log

    def adopt(self, slot: BusSlot, fd: int) -> None:
        import zmq
        from ntpd_py.ipc.endpoints import serve_slot

        try:
            channel = serve_slot(self._zctx, slot.path, fd)
        except zmq.ZMQError as exc:
            os.close(fd)
            self._log.error("cannot serve the bus slot %s of %s: %s", slot.path, slot.worker_id,
                            exc)
            return
        self.router.add(slot.worker_id, channel, wants_state=slot.role in STATE_ROLES)

    def update(self, message: SourceSet, fds: list[int]) -> None:
        wanted = {slot.worker_id: slot for slot in message.slots}
        for worker_id in self.router.worker_ids():
            if worker_id not in wanted:
                self.router.remove(worker_id)
        for index, fd in enumerate(fds):
            named = message.fd_slots[index] if index < len(message.fd_slots) else None
            slot = wanted.get(named) if named is not None else None
            if slot is None:
                os.close(fd)  # not ours to serve
            else:
                self.adopt(slot, fd)


def clock_control_main(ctx: ChildContext) -> int:
    import zmq
    from ntpd_py.ipc.endpoints import Endpoints, bind_pub, bind_router

    from .clock_control_setup import build_clock_control

    config = ctx.config
    endpoints = Endpoints(config.daemon.runtime_dir, config.control_socket_path())
    zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    bus = SlotRouter()
    slots = SlotServer(zctx, bus, ctx.log)
    for slot, fd in ctx.bus_slots:
        slots.adopt(slot, fd)
    pub = bind_pub(zctx, endpoints.state)
    control = bind_router(zctx, endpoints.control_path)
    os.chmod(endpoints.control_path, config.observability.observation_permissions)
    # `ntpctl watch` subscribes to the state feed: same audience as the control socket.
    os.chmod(endpoints.state, config.observability.observation_permissions)
    sock = socket.socket(fileno=ctx.link_fd)
    sock.setblocking(False)
    link = Link(sock, {MsgType.SOURCE_SET, MsgType.PROCESS_TABLE, MsgType.LOG_CONTROL})
    task, clock = build_clock_control(config, bus, pub, control, link, ctx.log)
    task.on_slots = slots.update
    try:
        run_zmq([task], clock, ctx.stop)
    except PanicExit as exc:
        return exc.code  # the state was saved before raising
    else:
        # Saved on a clean stop only: after a crash the state may be what crashed it.
        task.save(clock.now(), force=True)
    finally:
        for channel in (bus, pub, control):
            channel.close()
        zctx.term()
    ctx.log.info("stopped")
    return 0


def role_main(name: str) -> Callable[[ChildContext], int]:
    """What a forked child of this role runs."""
    if name not in ROLES:
        raise ValueError(f"unknown role {name!r}")
    return clock_control_main if name == "clock-control" else worker_main


def build_hub(config: Config, bus: SlotRouter, pub: Channel, control: Channel,
              log: logging.Logger) -> tuple[Any, LocalClock]:
    """clock-control for ``--single-process``: its task and the clock it steers."""
    from .clock_control_setup import build_clock_control

    return build_clock_control(config, bus, pub, control, None, log)

