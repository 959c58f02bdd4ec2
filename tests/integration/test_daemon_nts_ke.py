"""The real daemon as an NTS server end to end: `[[nts-ke-server]]` (its own unprivileged
worker; the supervisor binds the listener and reads the certificate and key) plus
`[[server]]`, sharing the supervisor's keyset.

(a) our NTS-KE client (workers/nts_ke_client.py) runs a key exchange with the daemon and
uses the cookies on the daemon's NTP server: authenticated replies; (b) chronyd 4.3 as an
NTS client (`-x`: never steers; stopped by PID) authenticates against the daemon. A CA
made by the test; loopback only.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.core.nts_extensions import AesSivCmac256, build_client_request, open_server_reply
from ntpd_py.core.packet import client_request, parse
from ntpd_py.workers.nts_ke_client import KeOutcome, key_exchange

from tests.adversarial.helpers import phc_config
from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_nts_chrony_client import chronyc, chronyd_authenticated, good_replies
from tests.ntp_helpers import free_udp_port, have, is_root, started
from tests.nts_helpers import Pki, free_tcp_port, make_pki

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not is_root(), reason="the supervisor reads the key as root")]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ntpd-py-ntske-"))
    path.chmod(0o777)  # chronyd drops root for _chrony and writes its files here
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _nts_daemon(pki: Pki, ntp_port: int, ke_port: int) -> Daemon:
    os.chmod(pki.server_key, 0o600)  # root's alone: the worker must get it from the supervisor
    return Daemon(phc_config(tables=(
        f'[[server]]\nlisten = "127.0.0.1:{ntp_port}"\n\n'
        f'[[nts-ke-server]]\nlisten = "127.0.0.1:{ke_port}"\n'
        f'certificate-chain-path = "{pki.server_cert}"\n'
        f'private-key-path = "{pki.server_key}"\nntp-port = {ntp_port}\n'
        "key-exchange-timeout-ms = 2000\n")))


def _counters(daemon: Daemon, listen: str) -> dict[str, int]:
    document = daemon.status() or {}
    for server in document.get("servers") or []:
        if server["listen"] == listen:
            return dict(server["counters"])
    return {}


def test_our_client_key_exchange_then_authenticated_ntp(shared_dir: Path) -> None:
    pki = make_pki(shared_dir / "pki")
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    with _nts_daemon(pki, ntp_port, ke_port) as daemon:
        ke_id = f"nts-ke:127.0.0.1:{ke_port}"
        document = daemon.wait_running(["server", ke_id])
        workers = {p["worker_id"]: p for p in document["processes"]}
        assert workers[ke_id]["role"] == "nts-ke"
        outcome = wait_for(lambda: (lambda o: o if isinstance(o, KeOutcome) else None)(
            key_exchange("127.0.0.1", ke_port, ca_file=str(pki.ca_cert), timeout=3.0)),
            30, "a key exchange with the daemon")
        assert outcome.ntp_port == ntp_port and len(outcome.response.cookies) == 8
        answered = 0
        for cookie in outcome.response.cookies[:3]:
            uid = os.urandom(32)
            request = build_client_request(client_request(int.from_bytes(os.urandom(8), "big"), 4),
                                           uid, cookie, 0, AesSivCmac256(outcome.keys.c2s),
                                           os.urandom(16))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2.0)
                sock.sendto(request, ("127.0.0.1", ntp_port))
                reply = sock.recv(4096)
            opened = open_server_reply(reply, uid, AesSivCmac256(outcome.keys.s2c))
            assert len(opened.cookies) == 1 and parse(reply).origin_ts == parse(request).transmit_ts
            answered += 1
        assert answered == 3
        ke_counters = wait_for(lambda: (lambda c: c if c.get("completed") else None)(
            _counters(daemon, f"nts-ke 127.0.0.1:{ke_port}")), 15, "the NTS-KE counters")
        assert ke_counters["completed"] >= 1 and ke_counters["failed"] == 0
        # the KE worker runs under its own uid, not root
        pid = workers[ke_id]["pid"]
        assert os.stat(f"/proc/{pid}").st_uid != 0


@pytest.mark.skipif(not (have("chronyd") and have("chronyc")), reason="needs chronyd, chronyc")
def test_chronyd_nts_client_authenticates_against_the_daemon(shared_dir: Path) -> None:
    pki = make_pki(shared_dir / "pki")
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    run_dir = shared_dir / "run"
    run_dir.mkdir()
    run_dir.chmod(0o770)  # chronyd refuses a command socket in a directory others can open
    shutil.chown(run_dir, "_chrony", "_chrony")
    cmd_socket = run_dir / "chronyd.sock"
    (shared_dir / "nts").mkdir()
    (shared_dir / "nts").chmod(0o777)
    conf = shared_dir / "client.conf"
    conf.write_text(
        f"server 127.0.0.1 port {ntp_port} ntsport {ke_port} nts iburst minpoll -2 maxpoll -2\n"
        f"ntstrustedcerts {pki.ca_cert}\nntsdumpdir {shared_dir}/nts\n"
        f"cmdport 0\nbindcmdaddress {cmd_socket}\npidfile {shared_dir}/chronyd.pid\n")
    with _nts_daemon(pki, ntp_port, ke_port) as daemon:
        daemon.wait_running(["server", f"nts-ke:127.0.0.1:{ke_port}"])

        def synchronized() -> bool:
            document = daemon.status() or {}
            return bool((document.get("clock") or {}).get("system", {}).get("synchronized")
                        or (document.get("clock") or {}).get("synchronized"))

        wait_for(synchronized, 40, "the daemon synchronized (its server says so)")
        with started(["chronyd", "-x", "-d", "-f", str(conf)]) as chrony:
            ntpdata = chronyd_authenticated(cmd_socket, timeout_s=40)
            authdata = chronyc(cmd_socket, "authdata")
            assert "Authenticated   : Yes" in ntpdata, (ntpdata, chrony.lines, daemon.log()[-3000:])
            assert good_replies(ntpdata) >= 3, ntpdata
            assert "NTS" in authdata, authdata
        counters = wait_for(lambda: (lambda c: c if c.get("nts_accepted", 0) >= 3 else None)(
            _counters(daemon, f"127.0.0.1:{ntp_port}")), 15,
            "the server's NTS counters", step=0.5)
        assert counters.get("nts_nak", 0) == 0 and counters.get("nts_dropped", 0) == 0, counters


def test_a_renewed_certificate_is_served_after_sighup(shared_dir: Path) -> None:
    """New certificate and key written over the old files, then SIGHUP: the supervisor
    reads them again and restarts the NTS-KE worker with them (its listener kept); the
    NTP server and the keyset are untouched."""
    import signal

    pki = make_pki(shared_dir / "pki")
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    ke_id = f"nts-ke:127.0.0.1:{ke_port}"
    with _nts_daemon(pki, ntp_port, ke_port) as daemon:
        document = daemon.wait_running(["server", ke_id])
        pids = {p["worker_id"]: p["pid"] for p in document["processes"]}
        wait_for(lambda: isinstance(key_exchange("127.0.0.1", ke_port, ca_file=str(pki.ca_cert),
                                                 timeout=3.0), KeOutcome), 30, "a first KE")
        renewed = make_pki(shared_dir / "renewed")  # another CA: only its clients trust it
        shutil.copyfile(renewed.server_cert, pki.server_cert)
        shutil.copyfile(renewed.server_key, pki.server_key)
        daemon.signal(signal.SIGHUP)

        def restarted() -> dict[str, int] | None:
            running = daemon.workers()
            entry = running.get(ke_id, {})
            if entry.get("pid") not in (None, pids[ke_id]) and entry.get("state") == "running":
                return {w: p["pid"] for w, p in running.items()}
            return None

        after = wait_for(restarted, 30, "the NTS-KE worker restarted with the new certificate")
        assert after["server"] == pids["server"]  # the NTP server kept running
        outcome = wait_for(lambda: (lambda o: o if isinstance(o, KeOutcome) else None)(
            key_exchange("127.0.0.1", ke_port, ca_file=str(renewed.ca_cert), timeout=3.0)),
            20, "a KE trusting the renewed certificate's CA")
        assert len(outcome.response.cookies) == 8
        old = key_exchange("127.0.0.1", ke_port, ca_file=str(pki.ca_cert), timeout=3.0)
        assert not isinstance(old, KeOutcome)  # the old CA does not vouch for the new one
        # an unchanged reload leaves it alone
        daemon.signal(signal.SIGHUP)
        time.sleep(3)
        assert daemon.workers()[ke_id]["pid"] == after[ke_id]
