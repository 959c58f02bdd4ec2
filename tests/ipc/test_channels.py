"""Channels: the in-memory hub and ZeroMQ behave alike, bounded and fair per sender."""

from __future__ import annotations

import time
from pathlib import Path

import zmq
from ntpd_py.ipc.channels import QUEUE_LIMIT, MemoryHub
from ntpd_py.ipc.endpoints import Endpoints, bind_pub, bind_router, connect_dealer, connect_sub


def test_memory_router_dealer_round_trip() -> None:
    hub = MemoryHub()
    router = hub.router("bus")
    a = hub.dealer("bus", b"a")
    assert a.send(b"hello")
    assert router.pending()
    assert router.recv() == (b"a", b"hello")
    assert router.send(b"back", b"a")
    assert a.recv() == (b"", b"back")
    assert not router.send(b"nobody", b"zz")
    assert router.recv() is None


def test_memory_flooder_fills_only_its_own_queue() -> None:
    hub = MemoryHub()
    router = hub.router("bus")
    flooder, quiet = hub.dealer("bus", b"flood"), hub.dealer("bus", b"quiet")
    sent = sum(flooder.send(b"x") for _ in range(QUEUE_LIMIT * 3))
    assert sent == QUEUE_LIMIT and hub.dropped == QUEUE_LIMIT * 2
    assert quiet.send(b"sample")
    received = [router.recv() for _ in range(2)]
    assert (b"quiet", b"sample") in received, "round robin must reach the quiet sender at once"


def test_memory_pub_sub_fan_out() -> None:
    hub = MemoryHub()
    pub = hub.pub("state")
    subs = [hub.sub("state") for _ in range(3)]
    assert pub.send(b"s1")
    assert all(s.recv() == (b"", b"s1") for s in subs)


def _wait(channel, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = channel.recv()
        if item is not None:
            return item
        time.sleep(0.005)
    raise AssertionError("nothing arrived")


def test_zmq_topology(tmp_path: Path) -> None:
    ep = Endpoints(str(tmp_path), str(tmp_path / "observe"))
    ctx = zmq.Context()
    try:
        router = bind_router(ctx, str(tmp_path / "router.sock"))
        dealer = connect_dealer(ctx, str(tmp_path / "router.sock"), "ptp:/dev/ptp0")
        pub = bind_pub(ctx, ep.state)
        sub = connect_sub(ctx, ep.state)
        assert dealer.send(b"sample")
        assert _wait(router) == (b"ptp:/dev/ptp0", b"sample")
        assert router.send(b"advice", b"ptp:/dev/ptp0")
        assert _wait(dealer) == (b"", b"advice")
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline:  # slow joiner: publish until seen
            pub.send(b"state")
            time.sleep(0.01)
            got = sub.recv()
        assert got == (b"", b"state")
        for channel in (router, dealer, pub, sub):
            channel.close()
    finally:
        ctx.term()


def test_zmq_router_fair_queues_a_flooder(tmp_path: Path) -> None:
    ctx = zmq.Context()
    try:
        router = bind_router(ctx, str(tmp_path / "router.sock"))
        flooder = connect_dealer(ctx, str(tmp_path / "router.sock"), "flood", hwm=100000)
        quiet = connect_dealer(ctx, str(tmp_path / "router.sock"), "quiet")
        assert _wait_connected(flooder, router)
        for _ in range(5000):
            flooder.send(b"x" * 100)
        quiet.send(b"sample")
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (b"quiet", b"sample") not in seen:
            item = router.recv()
            if item is not None:
                seen.append(item)
        assert (b"quiet", b"sample") in seen
        assert len(seen) < 2000, f"the quiet peer waited behind {len(seen)} flood frames"
        for channel in (router, flooder, quiet):
            channel.close()
    finally:
        ctx.term()


def _wait_connected(dealer, router) -> bool:
    dealer.send(b"hello")
    return _wait(router)[1] == b"hello"


def test_endpoint_path_length_checked(tmp_path: Path) -> None:
    ep = Endpoints("/run/" + "x" * 120, "/run/ntpd-py/observe")
    assert ep.problems() and "longer than 107" in ep.problems()[0]
    assert Endpoints("/run/ntpd-py", "/run/ntpd-py/observe").problems() == []
