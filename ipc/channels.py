"""Message channels between the daemon's loops: ZeroMQ sockets, or in-memory queues.

The worker and clock-control loops only see :class:`Channel`: send a frame,
receive a frame, nothing else. In the normal multi-process daemon a channel is
a ZeroMQ socket (DEALER -> ROUTER for the sample bus and control, PUB -> SUB
for clock state); with ``--single-process`` it is an in-memory queue in the
same process (no ZeroMQ, no threads), so the loops run unchanged under a
plain ``select.poll`` scheduler and under LD_PRELOAD clock/network simulators.

Every queue is bounded: a full queue drops the frame and the sender counts it
(ZeroMQ's high-water marks play the same role for sockets).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import zmq

__all__ = [
    "Channel",
    "MemoryChannel",
    "MemoryHub",
    "SlotRouter",
    "ZmqChannel",
]

# Frames from one peer waiting in a receiver; beyond this the sender's frames drop.
QUEUE_LIMIT = 1000


class Channel(Protocol):
    """One end of a message path. Non-blocking in both directions."""

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        """Queue a frame (to `peer` on a router end); False if it had to be dropped."""
        ...

    def recv(self) -> tuple[bytes, bytes] | None:
        """The next (peer, frame), or None when nothing is waiting. peer is b"" unless router."""
        ...

    def pending(self) -> bool:
        """Whether recv() would return a frame without waiting (in-memory ends only)."""
        ...

    def pollable(self) -> Any:
        """What the scheduler waits on: a zmq socket, or None for in-memory ends."""
        ...

    def close(self) -> None: ...


# -- ZeroMQ --------------------------------------------------------------------------------


class ZmqChannel:
    """A channel over one ZeroMQ socket (DEALER, ROUTER, PUB or SUB)."""

    def __init__(self, socket: zmq.Socket[bytes], *, router: bool = False, topic: bytes = b"",
                 credentials: bool = False):
        self._socket = socket
        self._router = router
        # Reading a frame's properties needs zero-copy frames, which cost more per message
        # than the bytes the sample bus moves: only the control socket asks for them.
        self._credentials = credentials
        self._topic = topic
        self._req_peers: set[bytes] = set()
        self._sender_uid: int | None = None

    def sender_uid(self) -> int | None:
        """The uid of the process behind the frame `recv` returned last (router only).

        libzmq reads it with SO_PEERCRED when it accepts an ipc connection and hands it on
        as the frame's "Peer-Address" (host:uid:gid:pid), so it is the kernel's word, not
        the sender's: limits keyed by it hold however often the sender reconnects.
        """
        return self._sender_uid

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        import zmq

        if self._router:
            parts = [peer, b"", frame] if peer in self._req_peers else [peer, frame]
            self._req_peers.discard(peer)
        else:
            parts = [self._topic, frame] if self._topic else [frame]
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        except zmq.ZMQError:
            return False
        return True

    def recv(self) -> tuple[bytes, bytes] | None:
        import zmq

        if self._router:
            return self._recv_routed()
        try:
            parts = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        if self._topic and len(parts) == 2:
            return b"", parts[1]
        return b"", parts[-1] if len(parts) == 1 else b""

    def _recv_routed(self) -> tuple[bytes, bytes] | None:
        import zmq

        try:
            if self._credentials:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                self._sender_uid = _peer_uid(frames[0]) if frames else None
                parts = [f.bytes for f in frames]
            else:
                parts = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        if len(parts) == 3 and parts[1] == b"":
            # A REQ peer (ntpctl) puts an empty delimiter before its frame and
            # expects one before the answer.
            self._req_peers.add(parts[0])
            return parts[0], parts[2]
        if len(parts) != 2:
            return (parts[0] if parts else b"", b"")  # malformed: counted by the caller
        return parts[0], parts[1]

    def pending(self) -> bool:
        return False

    def pollable(self) -> zmq.Socket[bytes]:
        return self._socket

    def close(self) -> None:
        self._socket.close(linger=0)


# -- one bus endpoint per worker -----------------------------------------------------------


class SlotRouter:
    """Clock-control's end of the sample bus: one router channel per worker slot.

    `recv` names the sender by the slot the frame arrived on (the supervisor made
    each slot's endpoint reachable by its worker only), never by the routing id
    the peer chose. `send(frame, worker_id)` goes to the peer last heard on that
    worker's slot (before any, to the routing id the worker is told to use).
    Slots are served round robin, so a flooding worker delays nobody else.
    """

    def __init__(self) -> None:
        self._slots: dict[str, Channel] = {}
        self._last_peer: dict[str, bytes] = {}
        self._state_peers: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def add(self, worker_id: str, channel: Channel, *, wants_state: bool = False) -> None:
        self.remove(worker_id)
        self._slots[worker_id] = channel
        self._order.append(worker_id)
        if wants_state:
            self._state_peers.add(worker_id)

    def remove(self, worker_id: str) -> None:
        channel = self._slots.pop(worker_id, None)
        if channel is None:
            return
        channel.close()
        self._order.remove(worker_id)
        self._last_peer.pop(worker_id, None)
        self._state_peers.discard(worker_id)

    def worker_ids(self) -> list[str]:
        return list(self._slots)

    def state_peers(self) -> list[bytes]:
        """The workers (server workers) that get the clock state over their slot."""
        return [w.encode() for w in self._state_peers]

    def channels(self) -> list[Channel]:
        return list(self._slots.values())

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        worker_id = peer.decode(errors="replace")
        channel = self._slots.get(worker_id)
        if channel is None:
            return False
        return channel.send(frame, self._last_peer.get(worker_id, peer))

    def recv(self) -> tuple[bytes, bytes] | None:
        for _ in range(len(self._order)):
            worker_id = self._order[0]
            self._order.rotate(-1)
            item = self._slots[worker_id].recv()
            if item is not None:
                if item[0]:
                    self._last_peer[worker_id] = item[0]
                return worker_id.encode(), item[1]
        return None

    def pending(self) -> bool:
        return any(channel.pending() for channel in self._slots.values())

    def pollable(self) -> None:
        return None  # the scheduler waits on channels() instead

    def close(self) -> None:
        for worker_id in list(self._slots):
            self.remove(worker_id)


# -- in memory -----------------------------------------------------------------------------


class MemoryChannel:
    """One end of an in-memory path; created by :class:`MemoryHub`.

    Frames wait in one bounded queue per sending peer and are received round
    robin, so a peer that floods fills only its own queue (as ZeroMQ's
    fair-queuing does for sockets).
    """

    def __init__(self, hub: MemoryHub, name: str, identity: bytes, router: bool) -> None:
        self._hub = hub
        self._name = name
        self._identity = identity
        self._router = router
        self._queues: dict[bytes, collections.deque[bytes]] = {}
        self._order: collections.deque[bytes] = collections.deque()
        self._waiting = 0

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        return self._hub.deliver(self, frame, peer)

    def accept(self, peer: bytes, frame: bytes) -> bool:
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = collections.deque()
            self._order.append(peer)
        if len(queue) >= QUEUE_LIMIT:
            return False
        queue.append(frame)
        self._waiting += 1
        return True

    def recv(self) -> tuple[bytes, bytes] | None:
        if not self._waiting:
            return None
        for _ in range(len(self._order)):
            peer = self._order[0]
            self._order.rotate(-1)
            queue = self._queues[peer]
            if queue:
                self._waiting -= 1
                return peer, queue.popleft()
        return None

    def pending(self) -> bool:
        return self._waiting > 0

    def pollable(self) -> None:
        return None

    def close(self) -> None:
        self._hub.detach(self)


class MemoryHub:
    """In-process replacement for the ZeroMQ endpoints, with the same topology.

    ``router(name)`` is the bound end (clock-control's bus or control socket);
    ``dealer(name, identity)`` connects to it. ``pub(name)``/``sub(name)`` fan out.
    """

    def __init__(self) -> None:
        self._routers: dict[str, MemoryChannel] = {}
        self._dealers: dict[str, dict[bytes, MemoryChannel]] = collections.defaultdict(dict)
        self._subs: dict[str, list[MemoryChannel]] = collections.defaultdict(list)
        self._pubs: set[int] = set()
        self.dropped = 0

    def router(self, name: str) -> MemoryChannel:
        end = MemoryChannel(self, name, b"", router=True)
        self._routers[name] = end
        return end

    def dealer(self, name: str, identity: bytes) -> MemoryChannel:
        end = MemoryChannel(self, name, identity, router=False)
        self._dealers[name][identity] = end
        return end

    def pub(self, name: str) -> MemoryChannel:
        end = MemoryChannel(self, name, b"", router=False)
        self._pubs.add(id(end))
        return end

    def sub(self, name: str) -> MemoryChannel:
        end = MemoryChannel(self, name, b"", router=False)
        self._subs[name].append(end)
        return end

    def deliver(self, sender: MemoryChannel, frame: bytes, peer: bytes) -> bool:
        name = sender._name
        if id(sender) in self._pubs:
            for sub in self._subs[name]:
                self._push(sub, b"", frame)
            return True
        if sender._router:
            target = self._dealers[name].get(peer)
            return target is not None and self._push(target, b"", frame)
        router = self._routers.get(name)
        return router is not None and self._push(router, sender._identity, frame)

    def _push(self, target: MemoryChannel, peer: bytes, frame: bytes) -> bool:
        if not target.accept(peer, frame):
            self.dropped += 1
            return False
        return True

    def detach(self, end: MemoryChannel) -> None:
        if self._routers.get(end._name) is end:
            del self._routers[end._name]
        if not end._router:
            self._dealers[end._name].pop(end._identity, None)
        if end in self._subs[end._name]:
            self._subs[end._name].remove(end)
        self._pubs.discard(id(end))


def _peer_uid(frame: Any) -> int | None:
    """The uid in a received frame's "Peer-Address" ("host:uid:gid:pid" on ipc)."""
    try:
        fields = str(frame.get("Peer-Address")).rsplit(":", 3)
        return int(fields[1]) if len(fields) == 4 else None
    except (ValueError, TypeError, OSError):  # not an ipc peer, or no such property
        return None
