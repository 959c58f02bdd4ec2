"""Where the daemon's sockets live and how each end is made.

Topology (all ``ipc://`` unix sockets in the runtime directory, except the
control socket which lives at ``observation-path``):

- ``bus``: clock-control binds a ROUTER; each source/server worker connects a
  DEALER whose routing id is its worker id. Samples and status flow in;
  poll advice flows back to the one worker it is for. ZeroMQ fair-queues the
  peers, and per-peer high-water marks bound every queue.
- ``state``: clock-control binds a PUB; the server worker and ``ntpctl watch``
  SUBscribe to the ``state`` topic.
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
    def bus(self) -> str:
        return os.path.join(self.runtime_dir, "bus.sock")

    @property
    def state(self) -> str:
        return os.path.join(self.runtime_dir, "state.sock")

    def problems(self) -> list[str]:
        return [
            f"socket path {path!r} is longer than {SUN_PATH_MAX} bytes; choose a shorter "
            "runtime-dir / observation-path"
            for path in (self.bus, self.state, self.control_path)
            if len(path.encode()) > SUN_PATH_MAX
        ]


def _url(path: str) -> str:
    return "ipc://" + path


def _common(sock: zmq.Socket[bytes]) -> None:
    import zmq

    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_FRAME)


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]], path: str, hwm: int = 1000) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.ROUTER)
    _common(sock)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, hwm)
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a previous run
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
    if os.path.exists(path):
        os.unlink(path)
    sock.bind(_url(path))
    return ZmqChannel(sock, topic=STATE_TOPIC)


def connect_sub(ctx: zmq.Context[zmq.Socket[bytes]], path: str) -> ZmqChannel:
    import zmq

    sock = ctx.socket(zmq.SUB)
    _common(sock)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.SUBSCRIBE, STATE_TOPIC)
    sock.connect(_url(path))
    return ZmqChannel(sock, topic=STATE_TOPIC)
