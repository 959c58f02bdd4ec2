"""Hostile NTS-KE clients against the daemon's NTS-KE worker (real processes, loopback).

Clients that connect and say nothing (half-open TLS), more of them than
`concurrent-connections`, and clients that send garbage instead of TLS: the worker
closes the extra ones at accept, drops the silent ones at `key-exchange-timeout-ms`,
counts each, keeps its pid, and a legitimate key exchange succeeds once the slots free.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from ntpd_py.workers.nts_ke_client import KeOutcome, key_exchange

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import phc_config
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port, is_root
from tests.nts_helpers import free_tcp_port, make_pki

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not is_root(), reason="the supervisor reads the key as root")]

SLOTS = 20
SILENT = 3 * SLOTS
TIMEOUT_MS = 1500


@pytest.fixture
def pki_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ntpd-py-ke-adv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ke_counters(daemon: Daemon, listen: str) -> dict[str, int]:
    for server in (daemon.status() or {}).get("servers") or []:
        if server["listen"] == f"nts-ke {listen}":
            return dict(server["counters"])
    return {}


def test_silent_and_garbage_clients_cannot_hold_the_key_exchange(pki_dir: Path,
                                                                  figures: Figures) -> None:
    pki = make_pki(pki_dir / "pki")
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    listen = f"127.0.0.1:{ke_port}"
    body = phc_config(tables=(
        f'[[server]]\nlisten = "127.0.0.1:{ntp_port}"\n\n'
        f'[[nts-ke-server]]\nlisten = "{listen}"\n'
        f'certificate-chain-path = "{pki.server_cert}"\nprivate-key-path = "{pki.server_key}"\n'
        f"ntp-port = {ntp_port}\nconcurrent-connections = {SLOTS}\n"
        f"key-exchange-timeout-ms = {TIMEOUT_MS}\n"))
    with Daemon(body) as daemon:
        worker_id = f"nts-ke:{listen}"
        document = daemon.wait_running([worker_id])
        pid = next(p["pid"] for p in document["processes"] if p["worker_id"] == worker_id)
        before = psutil.Process(pid).memory_info().rss
        silent = []
        try:
            for _ in range(SILENT):
                silent.append(socket.create_connection(("127.0.0.1", ke_port), timeout=2))
            for _ in range(10):  # not TLS at all
                with socket.create_connection(("127.0.0.1", ke_port), timeout=2) as junk:
                    junk.sendall(os.urandom(300))
            during = psutil.Process(pid).memory_info().rss
            # the silent ones lose their slot at the deadline: the worker closes them
            time.sleep(TIMEOUT_MS / 1000 + 1.0)
            closed = 0
            for sock in silent:
                sock.settimeout(2)
                try:
                    closed += sock.recv(1) == b""
                except ConnectionResetError:
                    closed += 1  # closed by the worker too
                except TimeoutError:
                    pass  # still held: counted as not closed
            outcome = wait_for(lambda: (lambda o: o if isinstance(o, KeOutcome) else None)(
                key_exchange("127.0.0.1", ke_port, ca_file=str(pki.ca_cert), timeout=3.0)),
                20, "a legitimate key exchange after the attack")
        finally:
            for sock in silent:
                sock.close()
        after = psutil.Process(pid).memory_info().rss
        counters = wait_for(lambda: (lambda c: c if c.get("completed") else None)(
            _ke_counters(daemon, listen)), 15, "the KE counters")
        print(f"\nNTS-KE: {SILENT} silent + 10 garbage clients against {SLOTS} slots: "
              f"{counters}; closed by the server {closed}; RSS {before >> 10} KiB before, "
              f"{during >> 10} during, {after >> 10} after")
        figures.record(scenario="NTS-KE silent and garbage clients",
                       attacker="a host on the network",
                       load=f"{SILENT} silent TCP connections, 10 non-TLS, {SLOTS} slots",
                       outcome=f"{counters.get('refused_full', 0)} refused at accept, "
                               f"{counters.get('timed_out', 0)} timed out, "
                               f"{counters.get('failed', 0)} failed; a legitimate KE then "
                               f"succeeded; RSS {before >> 10} -> {after >> 10} KiB")
        assert outcome.response.cookies and len(outcome.response.cookies) == 8
        assert closed == SILENT  # every one of them closed by the worker, none held
        # each hostile client was closed at accept (every slot taken), lost its slot at
        # the deadline, or failed its TLS handshake (garbage): all accounted for
        hostile = counters["refused_full"] + counters["timed_out"] + counters["failed"]
        assert hostile >= SILENT + 10, counters
        assert counters["refused_full"] > 0  # more clients than slots were refused at once
        assert counters["completed"] >= 1
        # nothing died or restarted
        again = {p["worker_id"]: p["pid"] for p in (daemon.status() or {})["processes"]}
        assert again[worker_id] == pid
