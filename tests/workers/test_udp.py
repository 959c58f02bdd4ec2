"""The UDP layer over real loopback sockets: kernel timestamps, our client against our
server (batched recvmmsg/sendmmsg path), and spoofed replies that must not move anything."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from ntpd_py.core.config import ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_client import (
    ClientSettings,
    Demobilize,
    DemobilizeReason,
    NtpClient,
    Publish,
    Send,
)
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.packet import KISS_DENY, KISS_RATE, Mode, NtpPacket, parse
from ntpd_py.core.timestamps import unix_ns_to_ntp64
from ntpd_py.workers._mmsg import ServerBatchIO
from ntpd_py.workers._udp import (
    ClientChannel,
    client_io_step,
    execute_client_actions,
    monotonic_ns,
    open_server_socket,
    realtime_ns,
    rx_timestamp_ns,
)

from tests.ntp_helpers import free_udp_port

MS = 1_000_000


# (address the server binds, address the client sends to)
BINDINGS = [("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
            # Wildcard binds must answer from the address the client used (IP_PKTINFO).
            ("0.0.0.0", "127.0.0.2"), ("::", "::1"), ("::", "127.0.0.2")]


@pytest.fixture(params=BINDINGS, ids=[f"{a}<-{b}" for a, b in BINDINGS])
def our_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, Responder]]:
    """Our responder behind the batched I/O, served from a thread."""
    bind, host = request.param
    port = free_udp_port(bind)
    sock = open_server_socket(bind, port)
    state = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.0005, 0.0005, 0x7F7F0101,
                             unix_ns_to_ntp64(realtime_ns()))
    responder = Responder(ServerConfig(listen=f"[{bind}]:{port}" if ":" in bind
                                       else f"{bind}:{port}"), state=state)
    io = ServerBatchIO(sock, responder, batch=8)
    stop = threading.Event()

    def loop() -> None:
        import select

        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while not stop.is_set():
            if poller.poll(50):
                io.handle_ready()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield host, port, responder
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def run_client(client: NtpClient, channel: ClientChannel, samples: int, timeout_s: float
               ) -> list[object]:
    events: list[object] = []
    deadline = None
    end = monotonic_ns() + int(timeout_s * 1e9)
    while sum(isinstance(e, Publish) for e in events) < samples and monotonic_ns() < end:
        deadline, actions = client_io_step(client, channel, deadline, 100 * MS)
        events.extend(actions)
    return events


def test_our_client_against_our_server(our_server: tuple[str, int, Responder]) -> None:
    host, port, responder = our_server
    client = NtpClient(ClientSettings(source_id="loop", burst_count=4,
                                      burst_interval_ns=50 * MS))
    channel = ClientChannel(host, port)
    try:
        events = run_client(client, channel, samples=4, timeout_s=10)
    finally:
        channel.close()
    samples = [e.sample for e in events if isinstance(e, Publish)]
    assert len(samples) == 4, (events, client.counters)
    for s in samples:
        assert abs(s.offset_s) < 0.005  # same clock on both ends; loopback noise only
        assert 0 <= s.delay_s < 0.05
        assert s.stratum == 2 and s.reference_id == 0x7F7F0101
    assert responder.counters()["accepted"] >= 4
    assert client.counters["accepted"] == 4


def test_kernel_timestamps_on_both_directions() -> None:
    port = free_udp_port()
    server = open_server_socket("127.0.0.1", port)
    channel = ClientChannel("127.0.0.1", port)
    try:
        before = realtime_ns()
        assert channel.send(b"x" * 48)
        assert channel.sent is not None
        # Loopback stamps the packet inside send(): the TX timestamp is already queued.
        assert channel.tx_kernel, "no SO_TIMESTAMPING software TX timestamp on loopback"
        assert before <= channel.sent.realtime_ns <= realtime_ns()
        time.sleep(0.01)
        _, anc, _, addr = server.recvmsg(2048, 256)
        rx = rx_timestamp_ns(anc)
        assert rx is not None and channel.sent.realtime_ns <= rx <= realtime_ns()
        server.sendto(b"y" * 48, addr)
        time.sleep(0.01)
        [(data, received)] = channel.receive()
        assert data == b"y" * 48
        assert rx <= received.realtime_ns <= realtime_ns()
        assert received.mono_ns <= monotonic_ns()
    finally:
        channel.close()
        server.close()


def test_each_request_uses_a_new_source_port() -> None:
    port = free_udp_port()
    server = open_server_socket("127.0.0.1", port)
    channel = ClientChannel("127.0.0.1", port)
    try:
        ports = set()
        for _ in range(5):
            channel.send(b"x" * 48)
            time.sleep(0.005)
            ports.add(server.recvfrom(100)[1][1])
        assert len(ports) == 5
    finally:
        channel.close()
        server.close()


def _reply_to(request: bytes, **override: object) -> bytes:
    req = parse(request)
    now = unix_ns_to_ntp64(realtime_ns())
    fields: dict[str, object] = dict(
        leap=LeapIndicator.NONE, version=4, mode=Mode.SERVER, stratum=1, poll=4, precision=-20,
        root_delay=0, root_dispersion=0, reference_id=0x47505300, reference_ts=now,
        origin_ts=req.transmit_ts, receive_ts=now, transmit_ts=now,
    )
    fields.update(override)
    return NtpPacket(**fields).encode()  # type: ignore[arg-type]


def test_spoofed_replies_over_real_sockets_move_nothing() -> None:
    port = free_udp_port()
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", port))
    fake.settimeout(2)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # same host, another port
    client = NtpClient(ClientSettings(source_id="spoof", burst_count=4))
    channel = ClientChannel("127.0.0.1", port)
    try:
        # Exchange 1: a genuine reply (kept for replaying later).
        _, rest = execute_client_actions(client.handle_timer(monotonic_ns()), channel)
        request, client_addr = fake.recvfrom(100)
        genuine = _reply_to(request)
        fake.sendto(genuine, client_addr)
        time.sleep(0.02)
        accepted = [a for data, rx in channel.receive() for a in
                    client.handle_reply(data, channel.sent, rx)]  # type: ignore[arg-type]
        assert [type(a) for a in accepted] == [Publish]
        # Exchange 2: everything an attacker could try, then the real answer.
        _, rest = execute_client_actions(client.handle_timer(monotonic_ns() + 3 * 10**9), channel)
        request, client_addr = fake.recvfrom(100)
        poll_before = client.poll_log2
        # From the server's address: wrong origins, spoofed kisses, a replay.
        fake.sendto(_reply_to(request, origin_ts=1), client_addr)
        fake.sendto(_reply_to(request, origin_ts=2, stratum=0, reference_id=KISS_DENY), client_addr)
        fake.sendto(_reply_to(request, origin_ts=3, stratum=0, reference_id=KISS_RATE, poll=12),
                    client_addr)
        fake.sendto(genuine, client_addr)
        # From another port, with the right origin: the connected socket never delivers it.
        other.sendto(_reply_to(request, stratum=0, reference_id=KISS_DENY), client_addr)
        time.sleep(0.05)
        actions = [a for data, rx in channel.receive() for a in
                   client.handle_reply(data, channel.sent, rx)]  # type: ignore[arg-type]
        assert actions == []
        assert client.counters["bogus_origin"] == 4
        assert client.poll_log2 == poll_before
        assert client.counters["kod_deny"] == client.counters["kod_rate"] == 0
        fake.sendto(_reply_to(request), client_addr)
        time.sleep(0.02)
        actions = [a for data, rx in channel.receive() for a in
                   client.handle_reply(data, channel.sent, rx)]  # type: ignore[arg-type]
        assert [type(a) for a in actions] == [Publish]
        assert not any(isinstance(a, Demobilize | Send) for a in actions + rest)
        assert client.counters["accepted"] == 2
        assert sum(client.counters.values()) == 6  # the off-port datagram never arrived
    finally:
        channel.close()
        fake.close()
        other.close()


def test_dual_stack_wildcard_applies_ipv4_access_lists_to_mapped_clients() -> None:
    import select

    from ntpd_py.core.config import FilterList

    port = free_udp_port("::")
    sock = open_server_socket("::", port)
    responder = Responder(ServerConfig(listen=f"[::]:{port}",
                                       denylist=FilterList(filter=["127.0.0.0/8"], action="deny")),
                          state=ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.0, 0.0, 1,
                                                 unix_ns_to_ntp64(realtime_ns())))
    io = ServerBatchIO(sock, responder, batch=4)
    client = NtpClient(ClientSettings(source_id="denied"))
    channel = ClientChannel("127.0.0.2", port)
    try:
        execute_client_actions(client.handle_timer(monotonic_ns()), channel)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        assert poller.poll(2000)
        assert io.handle_ready() == 1
        time.sleep(0.02)
        actions = [a for data, rx in channel.receive() for a in
                   client.handle_reply(data, channel.sent, rx)]  # type: ignore[arg-type]
        assert actions == [Demobilize(DemobilizeReason.DENY)]
        assert responder.counters()["denied"] == 1
    finally:
        channel.close()
        sock.close()
