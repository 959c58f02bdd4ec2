"""Per-worker bus slots: the sender is the slot a frame came by, never its routing id."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import zmq
from ntpd_py.ipc.channels import MemoryHub, SlotRouter
from ntpd_py.ipc.endpoints import Endpoints, bind_pub, connect_dealer, serve_slot


def _wait(channel, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = channel.recv()
        if item is not None:
            return item
        time.sleep(0.005)
    raise AssertionError("nothing arrived")


def _listen(path: Path) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock.detach()


def test_memory_slots_name_the_sender_by_path() -> None:
    hub = MemoryHub()
    router = SlotRouter()
    router.add("ptp:/dev/ptp0", hub.router("bus/a"))
    router.add("server", hub.router("bus/s"), wants_state=True)
    # Worker of slot a claims to be the server: still heard as slot a.
    liar = hub.dealer("bus/a", b"server")
    server = hub.dealer("bus/s", b"server")
    assert liar.send(b"x")
    assert router.pending()
    assert router.recv() == (b"ptp:/dev/ptp0", b"x")
    assert router.recv() is None
    # Replies go to the peer last heard on the slot, whatever it called itself.
    assert router.send(b"advice", b"ptp:/dev/ptp0")
    assert liar.recv() == (b"", b"advice")
    assert router.state_peers() == [b"server"]
    assert router.send(b"state", b"server")  # before the server ever spoke
    assert server.recv() == (b"", b"state")
    assert not router.send(b"x", b"nobody")
    router.remove("ptp:/dev/ptp0")
    assert router.worker_ids() == ["server"]
    assert not liar.send(b"y"), "a removed slot's path leads nowhere"


def test_zmq_slot_identity_by_endpoint_and_handover(tmp_path: Path) -> None:
    ctx = zmq.Context()
    path_a, path_b = tmp_path / "0.sock", tmp_path / "1.sock"
    router = SlotRouter()
    router.add("A", serve_slot(ctx, str(path_a), _listen(path_a)))
    router.add("B", serve_slot(ctx, str(path_b), _listen(path_b)))
    try:
        impostor = connect_dealer(ctx, str(path_a), "B")  # routing id of B, on A's slot
        assert impostor.send(b"i am B")
        assert _wait(router) == (b"A", b"i am B")
        real_b = connect_dealer(ctx, str(path_b), "B")
        assert real_b.send(b"sample")
        assert _wait(router) == (b"B", b"sample")
        # A second connection with the same routing id takes the slot over (handover):
        # a stale or duplicate connection cannot shadow the restarted worker.
        restarted = connect_dealer(ctx, str(path_a), "B")
        assert restarted.send(b"again")
        assert _wait(router) == (b"A", b"again")
        assert router.send(b"advice", b"A")
        assert _wait(restarted) == (b"", b"advice")
        for channel in (impostor, real_b, restarted):
            channel.close()
        router.close()
        # The listening fds were closed with the routers; the paths stay (the
        # supervisor owns them).
        assert path_a.exists()
    finally:
        ctx.term()


def test_state_socket_never_wider_than_0600_at_bind(tmp_path: Path) -> None:
    ctx = zmq.Context()
    old = os.umask(0)
    try:
        ep = Endpoints(str(tmp_path), str(tmp_path / "observe"))
        pub = bind_pub(ctx, ep.state)
        assert stat.S_IMODE(os.stat(ep.state).st_mode) == 0o600
        pub.close()
    finally:
        os.umask(old)
        ctx.term()


def test_slot_paths_are_checked_for_length() -> None:
    ep = Endpoints("/run/" + "x" * 90, "/run/ntpd-py/observe")
    assert any("bus" in p for p in ep.problems())
    assert Endpoints("/run/ntpd-py", "/run/ntpd-py/observe").slot_path(3) == \
        "/run/ntpd-py/bus/3.sock"


def test_clock_control_takes_server_counters_from_server_slots_only() -> None:
    import logging

    from ntpd_py.core.config import SynchronizationConfig
    from ntpd_py.core.controller import ClockController
    from ntpd_py.ipc.framing import decode, encode
    from ntpd_py.ipc.messages import ClockStateMsg, MsgType, ServerStats
    from ntpd_py.plumbing.scheduler import Now
    from ntpd_py.workers.clock_backends import ObserveClock
    from ntpd_py.workers.clock_control import ClockControlTask

    hub = MemoryHub()
    bus = SlotRouter()
    bus.add("ptp:/dev/ptp0", hub.router("bus/0"))
    bus.add("server", hub.router("bus/1"), wants_state=True)
    mono, real = time.monotonic_ns(), time.time_ns()
    task = ClockControlTask(
        controller=ClockController(SynchronizationConfig(), now_mono_ns=mono, now_real_ns=real),
        backend=ObserveClock(), bus=bus, pub=hub.pub("state"), control=hub.router("control"),
        link=None, store=None, log=logging.getLogger("t"))
    task.set_sources([], Now(mono, real), ["server"], ["127.0.0.1:123"])
    task.guard.configure("ptp:/dev/ptp0", 0)
    stats = encode(ServerStats(listen="127.0.0.1:123", counters={"received": 1}))
    liar, server = hub.dealer("bus/0", b"server"), hub.dealer("bus/1", b"server")
    liar.send(stats)  # a PHC worker posing as the server
    server.send(stats)
    task.step(Now(mono, real))
    # The sender is the slot, whatever the frame says: the PHC slot has no counters.
    assert task.guard.totals().get("not-a-server") == 1
    assert list(task.servers) == [("server", "127.0.0.1:123")]
    # The server slot, and only it, gets the clock state over its own path.
    item = server.recv()
    assert item is not None
    assert isinstance(decode(item[1], {MsgType.CLOCK_STATE}, max_size=1 << 20), ClockStateMsg)
    assert liar.recv() is None
