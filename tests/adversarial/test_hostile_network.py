"""A hostile network against the real daemon's NTP server (loopback only, bounded).

The daemon runs with a simulated clock and a `[[server]]` on 127.0.0.1. From
the test we send truncated packets, random bytes, modes 6/7 (the classic
amplification requests), versions 1/2/5/7, oversized and lying extension
fields, and a burst of valid requests from about 2000 source ports. Outcome:
no reply to anything malformed, no reply larger than 48 bytes or than its
request, every valid request still answered (the burst within the socket's
receive buffer), the malformed traffic counted in `ntpctl status --json`, and
no process restarted. The load figures and the CPU/RSS of the supervisor,
clock-control and the server worker before and during the attack are recorded
(`figures`; `pytest -s` shows them).
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import SIM_PTP, load_pids
from tests.adversarial.load import Background, measure
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port

pytestmark = pytest.mark.integration

BURST_PORTS = 2000
BATCH = 500  # sockets open at a time (file descriptors)


def request(version: int = 4, mode: int = 3, transmit: int = 0) -> bytearray:
    data = bytearray(48)
    data[0] = (version << 3) | mode
    data[2] = 6  # poll
    struct.pack_into(">Q", data, 40, transmit)
    return data


def extension(field_type: int, length_field: int, body: int) -> bytes:
    return struct.pack(">HH", field_type, length_field) + bytes(body)


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    oversized: list[tuple[str, int, int]] = field(default_factory=list)  # kind, reply, request

    def add(self, kind: str, n: int = 1) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + n


def hostile_packets(rng: random.Random, serial: Iterator[int]) -> Iterator[tuple[str, bytes]]:
    """Every malformed kind; none of them may get a reply."""
    valid = request(transmit=next(serial))
    for cut in range(48):
        yield "truncated", bytes(valid[:cut])
    for _ in range(300):
        data = bytearray(rng.randbytes(rng.randint(1, 1100)))
        data[0] = (data[0] & 0xF8) | rng.choice([0, 1, 2, 4, 5, 6, 7])  # never a client request
        yield "random", bytes(data)
    for mode in (6, 7):
        for version in (2, 3, 4):
            yield f"mode{mode}", bytes(request(version, mode, next(serial)))
    # ntpd's monlist (mode 7, implementation 3, request 42): the amplification classic
    yield "mode7", b"\x17\x00\x03\x2a" + bytes(4)
    # mode 6 READVAR: 12-byte control header
    yield "mode6", b"\x16\x02\x00\x01" + bytes(8)
    for version in (0, 1, 2, 5, 6, 7):
        for size in (48, 68):
            data = request(version, 3, next(serial)) + bytes(size - 48)
            yield f"version{version}", bytes(data)
    base = request(transmit=next(serial))
    oversized = [
        base + extension(0x0104, 0xFFFF, 12),  # claims 64 KiB, carries 16 bytes
        base + extension(0x0104, 2000, 1996),  # beyond the 1024 bytes of extensions we take
        base + extension(0x0104, 18, 14),  # not a multiple of 4
        base + extension(0x0104, 8, 4),  # under the 16-byte minimum
        base + extension(0x0104, 16, 12) * 80,  # 1280 bytes of well-formed fields
        base + bytes(2000),  # one big datagram of zeros
        base + bytes(7),  # trailing bytes that are neither a MAC nor a field
    ]
    for i, data in enumerate(oversized):
        struct.pack_into(">Q", data, 40, next(serial))
        yield "extension", bytes(data)
        del i


def _drain(sock: socket.socket, into: list[bytes], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        while True:
            try:
                into.append(sock.recv(65536))
            except BlockingIOError:
                break


def _ask_valid(sock: socket.socket, addr: tuple[str, int], serial: Iterator[int],
               tally: Tally) -> bool:
    """One valid request; True if the reply (48 bytes, our origin) came within 2 s."""
    transmit = next(serial)
    sock.sendto(request(transmit=transmit), addr)
    tally.add("valid")
    got: list[bytes] = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        _drain(sock, got, 0.1)
        for reply in got:
            if len(reply) == 48 and struct.unpack_from(">Q", reply, 24)[0] == transmit:
                tally.replies["valid"] = tally.replies.get("valid", 0) + 1
                return True
    return False


def _burst(addr: tuple[str, int], serial: Iterator[int], tally: Tally) -> tuple[int, float]:
    """A valid request from each of BURST_PORTS source ports; (answered, requests/s sent)."""
    answered, sent_s = 0, 0.0
    for start in range(0, BURST_PORTS, BATCH):
        socks = []
        try:
            for _ in range(min(BATCH, BURST_PORTS - start)):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
            expected = {}
            t0 = time.perf_counter()
            for s in socks:
                transmit = next(serial)
                expected[s.fileno()] = transmit
                s.sendto(request(transmit=transmit), addr)
            sent_s += time.perf_counter() - t0
            tally.add("burst", len(socks))
            pending = {s.fileno(): s for s in socks}
            deadline = time.monotonic() + 5
            while pending and time.monotonic() < deadline:
                ready, _, _ = select.select(list(pending.values()), [], [], 0.2)
                for s in ready:
                    reply = s.recv(65536)
                    if len(reply) > 48:
                        tally.oversized.append(("burst", len(reply), 48))
                    if struct.unpack_from(">Q", reply, 24)[0] == expected[s.fileno()]:
                        answered += 1
                        del pending[s.fileno()]
        finally:
            for s in socks:
                s.close()
    tally.replies["burst"] = answered
    return answered, BURST_PORTS / sent_s if sent_s else 0.0


def _servers(daemon: Daemon) -> dict[str, int]:
    document = daemon.status() or {}
    total: dict[str, int] = {}
    for server in document.get("servers", []):
        for key, value in server["counters"].items():
            total[key] = total.get(key, 0) + value
    return total


def _process_figures(daemon: Daemon) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of the whole tree."""
    cpu, rss = 0.0, 0
    for proc in [psutil.Process(daemon.pid), *daemon.children()]:
        try:
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return cpu, rss


def test_hostile_network_gets_nothing_and_the_server_keeps_serving(figures: Figures) -> None:
    port = free_udp_port()
    addr = ("127.0.0.1", port)
    daemon = Daemon(SIM_PTP + f'[[server]]\nlisten = "127.0.0.1:{port}"\n')
    rng = random.Random(17)
    serial = iter(range(0x1000_0000_0000_0001, 0x2000_0000_0000_0000))
    tally = Tally()
    with daemon:
        document = daemon.wait_running(["clock-control", "ptp:/dev/ptp0", "server"])
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized")
        pids = {p["worker_id"]: p["pid"] for p in daemon.status()["processes"]}  # type: ignore[index]
        restarts = {p["worker_id"]: p["restarts"] for p in document["processes"]}
        before = _servers(daemon)
        measured = load_pids(daemon, {"server worker": "server"})
        quiet = measure(measured, 1.0)
        cpu0, rss0 = _process_figures(daemon)
        during = Background(measured, 1.0)  # the malformed packets and interleaved requests
        t0 = time.monotonic()

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            assert _ask_valid(sock, addr, serial, tally), "no reply to a valid request"
            bad_sizes: dict[int, tuple[str, int]] = {}  # origin -> (kind, request size)
            replies: list[bytes] = []
            for kind, data in hostile_packets(rng, serial):
                sock.sendto(data, addr)
                tally.add(kind)
                if len(data) >= 48:
                    bad_sizes[struct.unpack_from(">Q", data, 40)[0]] = (kind, len(data))
                if sum(tally.sent.values()) % 50 == 0:  # interleaved: still serving?
                    assert _ask_valid(sock, addr, serial, tally), f"stopped serving at {kind}"
            _drain(sock, replies, 1.0)
            for reply in replies:  # stray replies: to a malformed packet, or a late valid one
                origin = struct.unpack_from(">Q", reply, 24)[0] if len(reply) >= 32 else 0
                kind, size = bad_sizes.get(origin, ("valid-late", 48))
                tally.replies[kind] = tally.replies.get(kind, 0) + 1
                if len(reply) > min(48, size):
                    tally.oversized.append((kind, len(reply), size))
            answered, rate = _burst(addr, serial, tally)
            assert _ask_valid(sock, addr, serial, tally), "no reply after the burst"

        elapsed = time.monotonic() - t0
        cpu1, rss1 = _process_figures(daemon)
        malformed_sent = sum(n for k, n in tally.sent.items() if k not in ("valid", "burst"))
        valid_sent = tally.sent["valid"] + tally.sent["burst"]

        print(
            f"\nhostile network: {malformed_sent} malformed + {valid_sent} valid packets in "
            f"{elapsed:.1f} s; burst of {BURST_PORTS} ports sent at {rate:,.0f}/s, "
            f"{answered} answered ({BURST_PORTS - answered} lost)\n"
            f"  sent by kind: {tally.sent}\n  replies by kind: {tally.replies}\n"
            f"  daemon CPU {cpu1 - cpu0:.2f} s, RSS {rss0 / 2**20:.1f} -> "
            f"{rss1 / 2**20:.1f} MiB")
        assert answered == BURST_PORTS, f"{BURST_PORTS - answered} of the burst lost"

        def counted() -> dict[str, int] | None:
            after = _servers(daemon)
            delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            return delta if delta.get("received", 0) >= malformed_sent + valid_sent else None

        delta = wait_for(counted, 15, "the server counters in ntpctl status --json")
        print(f"  server counters (delta): {delta}")
        bad = sum(n for k, n in tally.replies.items() if k not in ("valid", "burst", "valid-late"))
        now = {p["worker_id"]: p for p in daemon.status()["processes"]}  # type: ignore[index]
        same = {w: p["pid"] for w, p in now.items()} == pids and \
            {w: p["restarts"] for w, p in now.items()} == restarts
        figures.record(
            scenario="hostile NTP traffic",
            attacker="hostile network (loopback client of the [[server]])",
            load=f"{malformed_sent} malformed (truncated, random, mode 6/7, versions 0-7, bad "
                 f"extension fields) + {valid_sent:,} valid packets in {elapsed:.1f} s; a burst "
                 f"from {BURST_PORTS} source ports at {rate:,.0f}/s",
            outcome=f"{bad} replies to malformed packets, {len(tally.oversized)} larger than "
                    f"the request; {tally.replies.get('valid', 0)}/{tally.sent['valid']} "
                    f"interleaved and {answered}/{BURST_PORTS} burst requests answered; counted "
                    f"{delta.get('malformed', 0)} malformed, {delta.get('wrong_mode', 0)} wrong "
                    f"mode, {delta.get('bad_version', 0)} bad version; "
                    f"{'no process restarted' if same else 'A PROCESS WAS RESTARTED'}",
            before=quiet, after=during.result())
        bad_replies = {k: n for k, n in tally.replies.items()
                       if k not in ("valid", "burst", "valid-late")}
        assert bad_replies == {}, bad_replies
        assert tally.oversized == []
        assert tally.replies["valid"] == tally.sent["valid"]
        # what the server says it dropped is what we sent, by reason
        truncated_and_oversized = tally.sent["truncated"] + tally.sent["extension"]
        assert delta["malformed"] >= truncated_and_oversized
        assert delta["wrong_mode"] >= 6  # the 48-byte mode 6/7 requests at least
        bad_version = sum(n for k, n in tally.sent.items() if k.startswith("version"))
        assert delta["bad_version"] == bad_version
        assert delta["malformed"] + delta["wrong_mode"] + delta["bad_version"] == malformed_sent
        assert delta["ignored"] == malformed_sent
        assert delta["accepted"] == valid_sent
        # nobody was restarted: same pids, same restart counts
        after = {p["worker_id"]: p for p in daemon.status()["processes"]}  # type: ignore[index]
        assert {w: p["pid"] for w, p in after.items()} == pids
        assert {w: p["restarts"] for w, p in after.items()} == restarts
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert os.path.exists(daemon.runtime)
