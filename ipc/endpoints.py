"""Where the daemon's sockets live and how each end is made.

Topology (all ``ipc://`` unix sockets in the runtime directory, except the
control socket which lives at ``observation-path``):

- ``bus/<n>.sock``: one private endpoint per worker slot. The supervisor binds
  the listening socket (reachable by that slot's uid only) and hands it to
  clock-control, which serves it with a ROUTER of its own (``serve_slot``);
  the worker connects a DEALER. Which worker sent a frame is decided by the
  endpoint it arrived on, never by what the sender says. Samples and status
  flow in; poll advice (and, for server workers, the clock state) flows back.
- ``state``: clock-control binds a PUB; ``ntpctl watch`` SUBscribes to the
  ``state`` topic.
- control: clock-control binds a ROUTER; ``ntpctl`` connects a REQ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .channels import ZmqChannel

if TYPE_CHECKING:
    import zmq

__all__ = [
    "MAX_WIRE_FRAME",
    "STATE_TOPIC",
    "Endpoints",
    "bind_pub",
    "bind_router",
    "connect_dealer",
    "connect_sub",
    "serve_slot",
]

STATE_TOPIC = b"state"
# ZeroMQ disconnects a peer that sends a bigger frame; below it our own size
# check drops and counts (ipc.framing.DEFAULT_MAX_FRAME).
MAX_WIRE_FRAME = 1024 * 1024
SUN_PATH_MAX = 107


@dataclass(frozen=True)
class Endpoints:
    """The socket paths of one daemon instance."""

    runtime_dir: str
    control_path: str

    @property
    def bus_dir(self) -> str:
        return os.path.join(self.runtime_dir, "bus")

    def slot_path(self, number: int) -> str:
        return os.path.join(self.bus_dir, f"{number}.sock")

    @property
    def state(self) -> str:
        return os.path.join(self.runtime_dir, "state.sock")

    def problems(self) -> list[str]:
        return [
            f"socket path {path!r} is longer than {SUN_PATH_MAX} bytes; choose a shorter "
            "runtime-dir / observation-path"
            # 99999: the longest slot name the supervisor hands out
            for path in (self.slot_path(99999), self.state, self.control_path)
            if len(path.encode()) > SUN_PATH_MAX
        ]


def _url(path: str) -> str:
    return "ipc://" + path


def _common(sock: zmq.Socket[bytes]) -> None:
    import zmq

    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_FRAME)


def _bind_private(sock: zmq.Socket[bytes], path: str) -> None:
    """Bind under a restrictive umask, so the socket is never wider than 0600 between
    bind and the caller's chmod (zmq_bind creates an ipc socket file inside the call)."""
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a previous run
    old = os.umask(0o177)
    try:
        sock.bind(_url(path))
    finally:
        os.umask(old)


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]], path: str, hwm: int = 1000) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.ROUTER)
    _common(sock)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, hwm)
    _bind_private(sock, path)
    return ZmqChannel(sock, router=True, credentials=True)


def serve_slot(ctx: zmq.Context[zmq.Socket[bytes]], path: str, listen_fd: int,
               hwm: int = 1000) -> ZmqChannel:
    """A ROUTER on a worker slot's listening socket, which the supervisor bound.

    ZeroMQ takes the fd as is (USE_FD) and neither unlinks nor re-binds the
    path; closing the channel closes the fd. ROUTER_HANDOVER: a new connection
    that reuses a routing id takes it over, so a stale or duplicate connection
    can never shadow the restarted worker.
    """
    import zmq

    sock = ctx.socket(zmq.ROUTER)
    _common(sock)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.USE_FD, listen_fd)
    sock.bind(_url(path))
    return ZmqChannel(sock, router=True)


def connect_dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], path: str, identity: str, hwm: int = 100
) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.DEALER)
    _common(sock)
    sock.setsockopt(zmq.ROUTING_ID, identity.encode())
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.connect(_url(path))
    return ZmqChannel(sock)


def bind_pub(ctx: zmq.Context[zmq.Socket[bytes]], path: str) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.PUB)
    _common(sock)
    sock.setsockopt(zmq.SNDHWM, 100)
    _bind_private(sock, path)
    return ZmqChannel(sock, topic=STATE_TOPIC)


def connect_sub(ctx: zmq.Context[zmq.Socket[bytes]], path: str) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.SUB)
    _common(sock)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.SUBSCRIBE, STATE_TOPIC)
    sock.connect(_url(path))
    return ZmqChannel(sock, topic=STATE_TOPIC)
