"""The main function of each child role, imported only by the child that runs it.

Each main wires its task to ZeroMQ sockets, the supervisor link and the local
clock reader, runs it with :func:`ntpd_py.plumbing.scheduler.run_zmq`, and
returns the process exit code.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from ntpd_py.ipc.channels import SlotRouter
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import BusSlot, MsgType, SourceSet
from ntpd_py.plumbing.child import ChildContext

__all__ = ["SlotServer", "make_local_clock", "role_main"]


def make_local_clock(config: Any, writable: bool = False) -> Any:
    """The local clock this process reads: the real one, or the shared simulated one."""
    if config.daemon.clock == "simulated":
        from ntpd_py.plumbing.sim_world import current_clock_model
        from ntpd_py.plumbing.simclock import SimClock

        return SimClock(os.path.join(config.daemon.runtime_dir, "sim-clock"), writable,
                        current_clock_model())
    from ntpd_py.plumbing.scheduler import SystemClockReader

    return SystemClockReader()


def _link(ctx: ChildContext, accept: set[MsgType]) -> Link:
    sock = socket.socket(fileno=ctx.link_fd)
    sock.setblocking(False)
    return Link(sock, accept)


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
        self.router.add(slot.worker_id, channel, wants_state=slot.role == "server")

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
    from ntpd_py.plumbing.scheduler import run_zmq

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
    link = _link(ctx, {MsgType.SOURCE_SET, MsgType.PROCESS_TABLE, MsgType.LOG_CONTROL})
    task, clock = build_clock_control(config, bus, pub, control, link, ctx.log)
    task.on_slots = slots.update
    from .clock_control import PanicExit

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


def role_main(role: str) -> Callable[[ChildContext], int]:
    if role == "clock-control":
        return clock_control_main
    if role == "ptp":
        from .ptp import ptp_main

        return ptp_main
    if role == "ntp":
        from .ntp import ntp_main

        return ntp_main
    if role == "server":
        from .server import server_main

        return server_main
    if role == "metrics":
        from .metrics import metrics_main

        return metrics_main
    raise ValueError(f"unknown role {role!r}")
