"""The daemon's own NTP workers against real chrony: chronyd -x as its server,
chronyd -Q as a client of its server worker. Loopback only; stopped by PID."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_ntp_interop import _chronyd_query, _wait_for_ntp, chronyd_server
from tests.ntp_helpers import free_udp_port, have, is_root, started

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (have("chronyd") and is_root()), reason="needs chronyd and root"),
]


def test_daemon_synchronizes_from_chronyd_and_serves_chronyd_q(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    cmd, port = chronyd_server(tmp_path / "server")
    listen = free_udp_port()
    body = f"""
[[source]]
mode = "server"
address = "127.0.0.1:{port}"
poll-interval-limits = {{ min = 0, max = 6 }}
initial-poll-interval = 0

[[server]]
listen = "127.0.0.1:{listen}"

[synchronization]
minimum-agreeing-sources = 1
"""
    with started(cmd):
        _wait_for_ntp(port)
        with Daemon(body, clock="observe") as daemon:
            document = wait_for(lambda: (lambda d: d if d and d["clock"]["synchronized"]
                                         else None)(daemon.status()), 40, "synchronized")
            clock = document["clock"]
            assert clock["stratum"] == 2  # chronyd serves local stratum 1
            (source,) = document["sources"]
            assert source["state"] == "*" and source["reach"] > 0
            assert abs(source["offset_s"]) < 1e-3
            # chronyd as a client of our server worker (query only: -Q never sets a clock)
            result = _chronyd_query(tmp_path / "client", listen)
            output = result.stdout + result.stderr
            match = re.search(r"System clock wrong by (-?[0-9.]+) seconds \(ignored\)", output)
            assert match and result.returncode == 0, output
            assert abs(float(match.group(1))) < 0.005
            # the server worker's counters reach `ntpctl status`
            servers = wait_for(lambda: (lambda s: s if s and s[0]["counters"].get(
                "accepted", 0) >= 1 else None)((daemon.status() or {}).get("servers")), 10,
                "server counters")
            (server,) = servers
            assert server["listen"] == f"127.0.0.1:{listen}"
            assert server["counters"]["received"] >= server["counters"]["accepted"] >= 1
            assert "Server 127.0.0.1:" in daemon.ctl("status").stdout
