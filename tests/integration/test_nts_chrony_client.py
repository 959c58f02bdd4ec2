"""chronyd 4.3 as NTS client against our NTS-KE server module and a small test UDP loop
that answers with the core server function (loopback; a CA made by the test).

chronyd runs with ``-x -d`` (never steers) and a private command socket; the test reads
``chronyc ntpdata``/``authdata`` from it and stops chronyd by PID. ``chronyd -Q`` is
not used: in 4.3 it does not run NTS-KE before its single query.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.core.nts_cookies import ServerKeySet
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply
from ntpd_py.core.packet import HEADER_STRUCT, parse
from ntpd_py.workers.nts_ke_server import KeServer, server_context

from tests.ntp_helpers import free_udp_port, have, is_root, started
from tests.nts_helpers import free_tcp_port, make_pki

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (have("chronyd") and have("chronyc") and is_root()),
                       reason="needs chronyd, chronyc and root"),
]
NTP_EPOCH = 2208988800


def ntp_now() -> int:
    return int((time.time() + NTP_EPOCH) * 2**32)


class UdpNtsServer:
    """Answers NTS requests with the core functions; counts what it did."""

    def __init__(self, port: int, keyset: ServerKeySet) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.keyset = keyset
        self.counts = {v: 0 for v in Verdict}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            received = ntp_now()
            verdict = judge_request(data, self.keyset)
            self.counts[verdict.verdict] += 1
            if verdict.verdict is Verdict.AUTHENTICATED:
                request = parse(data)
                header = HEADER_STRUCT.pack(0x24, 1, request.poll, -20, 0, 0x100,
                                            int.from_bytes(b"TEST", "big"), received,
                                            request.transmit_ts, received, ntp_now())
                self.sock.sendto(authenticated_reply(header, verdict, self.keyset, os.urandom,
                                                     len(data)), peer)
            elif verdict.verdict is Verdict.NAK:
                self.sock.sendto(nak_reply(verdict), peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ntpd-py-nts-"))
    path.chmod(0o777)  # chronyd drops root for _chrony and writes its files here
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def chronyc(socket_path: Path, *command: str) -> str:
    # ntpdata and authdata are answered on chronyd's Unix socket only
    result = subprocess.run(["chronyc", "-h", str(socket_path), "-n", *command],
                            capture_output=True, text=True, timeout=10)
    return result.stdout + result.stderr


def chronyd_authenticated(socket_path: Path, good: int = 3, timeout_s: float = 30) -> str:
    """chronyc ntpdata once chronyd counts `good` authenticated replies (or at the timeout:
    the caller asserts on what it returns)."""
    end = time.monotonic() + timeout_s
    ntpdata = ""
    while time.monotonic() < end:
        time.sleep(1)
        ntpdata = chronyc(socket_path, "ntpdata")
        if "Authenticated   : Yes" in ntpdata and good_replies(ntpdata) >= good:
            break
    return ntpdata


def good_replies(ntpdata: str) -> int:
    found = re.search(r"Total good RX\s*:\s*(\d+)", ntpdata)
    return int(found.group(1)) if found else 0


def test_chronyd_nts_client_authenticates_against_us(shared_dir: Path) -> None:
    pki = make_pki(shared_dir / "pki")
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    run_dir = shared_dir / "run"
    run_dir.mkdir()
    run_dir.chmod(0o770)  # chronyd refuses a command socket in a directory others can open
    shutil.chown(run_dir, "_chrony", "_chrony")
    cmd_socket = run_dir / "chronyd.sock"
    keyset = ServerKeySet.generate(os.urandom, 0)
    ke = KeServer(("127.0.0.1", ke_port), server_context(pki.chain_pem, pki.key_pem),
                  lambda: keyset, ntp_port=ntp_port, timeout_s=2.0)
    stop = threading.Event()
    ke_thread = threading.Thread(target=ke.serve_forever, args=(stop.is_set,))
    ke_thread.start()
    udp = UdpNtsServer(ntp_port, keyset)
    conf = shared_dir / "client.conf"
    (shared_dir / "nts").mkdir()
    (shared_dir / "nts").chmod(0o777)
    conf.write_text(
        f"server 127.0.0.1 port {ntp_port} ntsport {ke_port} nts iburst minpoll -2 maxpoll -2\n"
        f"ntstrustedcerts {pki.ca_cert}\nntsdumpdir {shared_dir}/nts\n"
        f"cmdport 0\nbindcmdaddress {cmd_socket}\npidfile {shared_dir}/chronyd.pid\n"
    )
    try:
        with started(["chronyd", "-x", "-d", "-f", str(conf)]) as chrony:
            ntpdata = chronyd_authenticated(cmd_socket)
            authdata = chronyc(cmd_socket, "authdata")
            assert "Authenticated   : Yes" in ntpdata, (ntpdata, chrony.lines)
            assert good_replies(ntpdata) >= 3, ntpdata
            assert "NTS" in authdata, authdata
            assert ke.stats.completed >= 1
            assert udp.counts[Verdict.AUTHENTICATED] >= 3
            assert udp.counts[Verdict.NAK] == 0 and udp.counts[Verdict.DROP] == 0
    finally:
        udp.stop()
        stop.set()
        ke_thread.join(5)
        ke.close()
