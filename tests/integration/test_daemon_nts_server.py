"""NTS on the real daemon's NTP server (`ntpd-py run`, loopback): the supervisor's keyset
at `[keyset] key-storage-path` seals the cookies every server process opens.

The test plays an NTS-KE server's part with the same keyset (read from the file the
test wrote first, as a key exchange would make cookies), then sends real NTS requests
over UDP built with core/nts_extensions: authenticated replies that verify and carry
fresh cookies that work; a cookie no key opens gets an NTS NAK; one flipped bit of the
authenticator gets nothing; a replayed request is answered again (the server is
stateless; the client refuses a second reply to one identifier); `require-nts = "deny"`
kisses plain requests; the rotated keys reach the server worker over its link; and
`ntpctl status --json` counts each (ntpd-rs's nts_* counters).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    build_client_request,
    is_nts_nak,
    open_server_reply,
)
from ntpd_py.core.packet import KISS_DENY, client_request, parse

from tests.adversarial.helpers import phc_config
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port

pytestmark = pytest.mark.integration

KEYS = NtsKeys(os.urandom(32), os.urandom(32))


def _nts_request(keyset: ServerKeySet, uid: bytes, placeholders: int = 1,
                 keys: NtsKeys = KEYS) -> bytes:
    cookie = keyset.make_cookie(keys, os.urandom(16))
    header = client_request(int.from_bytes(os.urandom(8), "big"), 4)
    return build_client_request(header, uid, cookie, placeholders, AesSivCmac256(keys.c2s),
                                os.urandom(16))


def _ask(port: int, request: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def _server_counters(daemon: Daemon) -> dict[str, int]:
    document = daemon.status() or {}
    servers = document.get("servers") or []
    return dict(servers[0]["counters"]) if servers else {}


def _daemon(tmp: Path, port: int, extra_server: str = "", rotation_s: int = 86400
            ) -> tuple[Daemon, ServerKeySet, str]:
    daemon = Daemon("")
    key_path = str(daemon.dir / "nts-keys.json")
    keyset = ServerKeySet.generate(os.urandom, time.time_ns(), float(rotation_s))
    with open(key_path, "wb") as handle:
        handle.write(keyset.to_bytes())
    os.chmod(key_path, 0o600)
    daemon.write_config(phc_config(tables=(
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n{extra_server}\n'
        f'[keyset]\nkey-storage-path = "{key_path}"\nkey-rotation-interval = {rotation_s}\n')))
    return daemon, keyset, key_path


def test_nts_requests_to_the_daemons_server(tmp_path: Path) -> None:
    port = free_udp_port()
    daemon, keyset, key_path = _daemon(tmp_path, port)
    with daemon:
        daemon.wait_running(["clock-control", "server"])
        uid = os.urandom(32)
        request = _nts_request(keyset, uid, placeholders=2)
        reply = wait_for(lambda: _ask(port, request, 0.5), 20, "an NTS reply")
        assert len(reply) <= len(request)
        opened = open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
        assert len(opened.cookies) == 3
        assert parse(reply).origin_ts == parse(request).transmit_ts
        # a fresh cookie from the reply works in the next request
        uid2 = os.urandom(32)
        header = client_request(int.from_bytes(os.urandom(8), "big"), 4)
        again = build_client_request(header, uid2, opened.cookies[0], 0,
                                     AesSivCmac256(KEYS.c2s), os.urandom(16))
        second = _ask(port, again)
        assert second is not None and open_server_reply(second, uid2, AesSivCmac256(KEYS.s2c))
        # replayed: answered again (stateless server)
        assert _ask(port, request) is not None
        # a cookie sealed with keys the daemon does not have: NTS NAK
        stranger = ServerKeySet.generate(os.urandom, time.time_ns())
        uid3 = os.urandom(32)
        nak = _ask(port, _nts_request(stranger, uid3))
        assert nak is not None and is_nts_nak(nak, uid3)
        # one flipped bit in the authenticator: dropped, no answer
        forged = bytearray(_nts_request(keyset, os.urandom(32)))
        forged[-3] ^= 0x10
        assert _ask(port, bytes(forged), 1.0) is None
        # plain NTP still served
        plain = _ask(port, client_request(12345, 4))
        assert plain is not None and len(plain) == 48 and parse(plain).stratum != 0

        def counted() -> dict[str, int] | None:
            c = _server_counters(daemon)
            return c if c.get("nts_received", 0) >= 5 else None

        counters = wait_for(counted, 10, "the server's NTS counters")
        assert counters["nts_accepted"] >= 3 and counters["nts_nak"] == 1
        assert counters["nts_dropped"] == 1
        text = daemon.ctl("status").stdout
        assert "NTS received" in text, text
        # the key file stays the supervisor's: root's, 0600, never a worker's
        info = os.stat(key_path)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()


def test_require_nts_deny_and_key_rotation_reach_the_server(tmp_path: Path) -> None:
    port = free_udp_port()
    daemon, keyset, key_path = _daemon(tmp_path, port, 'require-nts = "deny"', rotation_s=2)
    with daemon:
        daemon.wait_running(["clock-control", "server"])
        uid = os.urandom(32)
        reply = wait_for(lambda: _ask(port, _nts_request(keyset, uid), 0.5), 20,
                         "an NTS reply")
        assert open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
        kiss = _ask(port, client_request(999, 4))
        assert kiss is not None and parse(kiss).stratum == 0
        assert parse(kiss).reference_id == KISS_DENY

        # the supervisor rotates every 2 s and rewrites the file; the server worker must
        # open cookies of the newest key, which it can only have from its link
        def rotated() -> ServerKeySet | None:
            with open(key_path, "rb") as handle:
                stored = ServerKeySet.from_bytes(handle.read(), 2.0)
            return stored if len(stored.keys) >= 3 else None

        newer = wait_for(rotated, 20, "two key rotations stored")
        assert newer.primary.key_id != keyset.primary.key_id

        def answered_with_newest() -> bytes | None:
            with open(key_path, "rb") as handle:
                stored = ServerKeySet.from_bytes(handle.read(), 2.0)
            uid = os.urandom(32)
            reply = _ask(port, _nts_request(stored, uid), 0.5)
            if reply is None or is_nts_nak(reply, uid):
                return None
            open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
            return reply

        wait_for(answered_with_newest, 10, "a cookie of the rotated key accepted")
        log = daemon.log()
        assert "NTS cookie keys rotated" in log, log[-3000:]
        document = daemon.status() or {}
        assert json.dumps(document)  # the status stays valid JSON with the nts counters
