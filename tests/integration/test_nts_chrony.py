"""Our NTS client against chronyd 4.3 as NTS server (loopback; a CA made by the test).

chronyd runs with ``-x`` (never steers), its own NTP and NTS-KE ports and a private
``ntsdumpdir``; it is stopped by PID in a ``finally``. Checked: the key exchange (TLS 1.3,
ALPN, exporter keys, 8 cookies, port negotiation honoured), authenticated exchanges whose
cookies rotate, tampered and replayed replies rejected, and a chronyd restarted with new
keys answering NTSN, after which a new key exchange recovers.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ntpd_py.core.nts_cookies import CookieJar, JarState
from ntpd_py.core.nts_extensions import NtsError, is_nts_nak
from ntpd_py.core.nts_ke_records import FailureKind, KeFailure
from ntpd_py.core.nts_session import NtsSession, ReplyKind
from ntpd_py.core.packet import client_request
from ntpd_py.workers.nts_ke_client import KeOutcome, key_exchange

from tests.ntp_helpers import free_udp_port, have, is_root, started
from tests.nts_helpers import Pki, free_tcp_port, make_pki, nts_exchange, verify

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (have("chronyd") and is_root()), reason="needs chronyd and root"),
]


@contextmanager
def chronyd_nts(directory: Path, pki: Pki, ntp_port: int, ke_port: int) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)  # chronyd drops root for _chrony and writes its files here
    conf = directory / "chrony.conf"
    conf.write_text(
        f"port {ntp_port}\nntsport {ke_port}\nbindaddress 127.0.0.1\nlocal stratum 1\n"
        f"allow 127.0.0.1\ncmdport 0\npidfile {directory}/chronyd.pid\n"
        f"ntsserverkey {pki.server_key}\nntsservercert {pki.server_cert}\n"
        f"ntsdumpdir {directory}/nts\nntsprocesses 0\n"
    )
    (directory / "nts").mkdir(exist_ok=True)
    (directory / "nts").chmod(0o777)
    with started(["chronyd", "-x", "-d", "-f", str(conf)]):
        yield


def wait_for_ke(port: int, pki: Pki, timeout_s: float = 10.0) -> KeOutcome:
    end = time.monotonic() + timeout_s
    last: KeFailure | None = None
    while time.monotonic() < end:
        result = key_exchange("127.0.0.1", port, ca_file=str(pki.ca_cert), timeout=2.0)
        if isinstance(result, KeOutcome):
            return result
        last = result
        time.sleep(0.2)
    raise AssertionError(f"no key exchange with chronyd: {last}")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory chronyd can reach after dropping root for _chrony (pytest's
    tmp_path is under a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="ntpd-py-nts-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pki(shared_dir: Path) -> Pki:
    return make_pki(shared_dir / "pki")


def test_key_exchange_cookies_rotate_and_tampering_is_rejected(shared_dir: Path,
                                                               pki: Pki) -> None:
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        outcome = wait_for_ke(ke_port, pki)
        assert len(outcome.response.cookies) == 8
        assert outcome.ntp_port == ntp_port  # chronyd names its non-standard NTP port
        assert outcome.keys.c2s != outcome.keys.s2c and len(outcome.keys.c2s) == 32
        jar = CookieJar()
        jar.install(outcome.keys, outcome.response.cookies)
        used = set()
        for _ in range(10):  # more than 8: only rotation keeps the jar full
            exchange = nts_exchange(jar, outcome.ntp_port)
            used.add(exchange.request)
            new = verify(jar, exchange)
            assert len(new) == 1 and new[0] not in outcome.response.cookies
            assert len(jar) == 8 and jar.state is JarState.READY

        # tampering with a captured reply: one flipped bit in the authenticator,
        # another request's identifier, the same reply twice
        exchange = nts_exchange(jar, outcome.ntp_port)
        flipped = bytearray(exchange.reply)
        flipped[-20] ^= 0x01  # inside the authenticator's ciphertext
        with pytest.raises(NtsError):
            verify(jar, type(exchange)(exchange.request, bytes(flipped), exchange.uid,
                                       exchange.transmit))
        with pytest.raises(NtsError, match="unique identifier"):
            verify(jar, type(exchange)(exchange.request, exchange.reply, bytes(32),
                                       exchange.transmit))
        verify(jar, exchange)
        with pytest.raises(AssertionError):
            verify(jar, exchange)  # a replay: the jar no longer waits for this uid

    # chronyd restarted with new cookie keys (a fresh ntsdumpdir): our cookies are
    # unknown to it, it answers NTSN, and a new key exchange recovers
    with chronyd_nts(shared_dir / "chrony2", pki, ntp_port, ke_port):
        fresh = wait_for_ke(ke_port, pki)
        exchange = nts_exchange(jar, ntp_port)
        assert is_nts_nak(exchange.reply, exchange.uid)
        assert jar.nak(exchange.uid) and jar.state is JarState.NEEDS_KEY_EXCHANGE
        jar.install(fresh.keys, fresh.response.cookies)
        assert len(verify(jar, nts_exchange(jar, ntp_port))) == 1


def test_untrusted_certificate_and_wrong_name_fail(shared_dir: Path, pki: Pki) -> None:
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    other = make_pki(shared_dir / "other")
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        wait_for_ke(ke_port, pki)
        untrusted = key_exchange("127.0.0.1", ke_port, ca_file=str(other.ca_cert), timeout=2.0)
        assert isinstance(untrusted, KeFailure) and untrusted.kind is FailureKind.TRANSPORT
        no_ca = key_exchange("127.0.0.1", ke_port, timeout=2.0)
        assert isinstance(no_ca, KeFailure) and no_ca.kind is FailureKind.TRANSPORT
        # The certificate names localhost and 127.0.0.1, not 127.0.0.2 (which is also us).
        wrong = key_exchange("127.0.0.2", ke_port, ca_file=str(pki.ca_cert), timeout=2.0)
        assert isinstance(wrong, KeFailure)


def test_key_exchange_timeout_against_a_silent_server() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts (the kernel does) but never speaks TLS
        start = time.monotonic()
        result = key_exchange("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        assert isinstance(result, KeFailure) and "timed out" in result.detail
        assert time.monotonic() - start < 3.0


def test_nts_session_against_chronyd(shared_dir: Path, pki: Pki) -> None:
    """The session object the NTP worker will hold, against chronyd: every reply is
    authenticated and the jar stays full."""
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        outcome = wait_for_ke(ke_port, pki)
        session = NtsSession(os.urandom)
        session.install(outcome.keys, outcome.response.cookies)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for transmit in range(1, 13):
                s.sendto(session.request(client_request(transmit, 4)),
                         (outcome.ntp_host, outcome.ntp_port))
                verdict = session.reply(s.recvfrom(2048)[0])
                assert verdict.kind is ReplyKind.AUTHENTICATED, verdict.reason
                assert verdict.packet is not None and verdict.packet.origin_ts == transmit
                assert verdict.packet.stratum == 1  # chronyd: local stratum 1
                assert session.cookies == 8
            # seven requests lost: the next carries 7 placeholders and chronyd refills the jar
            for transmit in range(20, 27):
                session.request(client_request(transmit, 4))
            assert session.cookies == 1
            request = session.request(client_request(30, 4))
            s.sendto(request, (outcome.ntp_host, outcome.ntp_port))
            verdict = session.reply(s.recvfrom(2048)[0])
            assert verdict.kind is ReplyKind.AUTHENTICATED, verdict.reason
            assert session.cookies == 8
