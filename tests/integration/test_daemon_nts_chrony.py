"""The real daemon with an NTS source (`mode = "nts"`) against chronyd 4.3 as NTS
server: the key exchange runs in the source's own unprivileged worker, and
`ntpctl status` shows authenticated samples and the cookies left. Loopback only;
chronyd runs with -x (never steers) and is stopped by PID."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_nts_chrony import chronyd_nts, pki, shared_dir, wait_for_ke
from tests.ntp_helpers import free_udp_port, have, is_root
from tests.nts_helpers import Pki, free_tcp_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (have("chronyd") and is_root()), reason="needs chronyd and root"),
]

__all__ = ["nts_pool_config", "pki", "shared_dir"]  # the fixtures: from test_nts_chrony


def nts_pool_config(ke_port: int, pki: Pki) -> str:
    """An nts-pool of 2 members against one local NTS-KE server, polling every second."""
    return f"""
[[source]]
mode = "nts-pool"
address = "127.0.0.1:{ke_port}"
count = 2
certificate-authority = "{pki.ca_cert}"
poll-interval-limits = {{ min = 0, max = 6 }}
initial-poll-interval = 0

[synchronization]
minimum-agreeing-sources = 1
"""


def test_daemon_nts_source_authenticates_against_chronyd(shared_dir: Path, pki: Pki) -> None:
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    body = f"""
[[source]]
mode = "nts"
address = "127.0.0.1:{ke_port}"
certificate-authority = "{pki.ca_cert}"
poll-interval-limits = {{ min = 0, max = 6 }}
initial-poll-interval = 0

[synchronization]
minimum-agreeing-sources = 1
"""
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        wait_for_ke(ke_port, pki)
        with Daemon(body, clock="observe") as daemon:
            def authenticated() -> dict | None:  # type: ignore[type-arg]
                document = daemon.status()
                if not document or not document["sources"]:
                    return None
                source = document["sources"][0]
                return source if source.get("authenticated", 0) >= 3 else None

            source = wait_for(authenticated, 40, "authenticated NTS samples")
            assert source["nts"] is True
            assert source["reach"] > 0 and source["samples"] >= 1
            # every reply carries a fresh cookie: the jar stays (nearly) full
            assert source["cookies"] is not None and 1 <= source["cookies"] <= 8
            text = daemon.ctl("status").stdout
            assert "[nts, " in text and " cookies]" in text


def test_daemon_nts_source_recovers_from_a_restarted_chronyd_with_new_keys(
        shared_dir: Path, pki: Pki) -> None:
    """chronyd restarted with fresh keys (a new ntsdumpdir): the cookies the daemon holds
    no longer open, chronyd answers them with an NTS NAK, and the source's worker runs a
    new key exchange and authenticates again."""
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    body = f"""
[[source]]
mode = "nts"
address = "127.0.0.1:{ke_port}"
certificate-authority = "{pki.ca_cert}"
poll-interval-limits = {{ min = 0, max = 0 }}
initial-poll-interval = 0

[synchronization]
minimum-agreeing-sources = 1
"""

    def authenticated(daemon: Daemon, at_least: int) -> dict | None:  # type: ignore[type-arg]
        document = daemon.status()
        if not document or not document["sources"]:
            return None
        source = document["sources"][0]
        return source if source.get("authenticated", 0) >= at_least else None

    with Daemon(body, clock="observe") as daemon:
        with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
            wait_for_ke(ke_port, pki)
            first = wait_for(lambda: authenticated(daemon, 3), 40, "authenticated samples")
        # the same ports, new server keys: every cookie the daemon holds is now stale
        with chronyd_nts(shared_dir / "chrony-restarted", pki, ntp_port, ke_port):
            wait_for_ke(ke_port, pki)
            again = wait_for(lambda: authenticated(daemon, first["authenticated"] + 3), 60,
                             "authenticated samples after chronyd's restart")
        assert again["nts"] is True and again["cookies"] is not None and again["cookies"] >= 1
        log = daemon.log()
        # the worker said why it ran a new key exchange (a NAK, or the jar ran out while
        # chronyd was down): never silently
        assert "NTS NAK from the server" in log or "out of NTS cookies" in log, log[-3000:]


def test_daemon_nts_pool_counts_one_ntp_server_once(shared_dir: Path, pki: Pki) -> None:
    """`mode = "nts-pool"`, count 2, against one chronyd: each member makes its own key
    exchange (its own worker), both are sent to the same NTP server, and clock-control
    counts that server once: the member that named it first is used, the other is shown
    as its duplicate."""
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    body = nts_pool_config(ke_port, pki)
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        wait_for_ke(ke_port, pki)
        with Daemon(body, clock="observe") as daemon:
            def settled() -> dict | None:  # type: ignore[type-arg]
                document = daemon.status()
                if not document or len(document["sources"]) != 2:
                    return None
                by_id = {s["source_id"]: s for s in document["sources"]}
                first = by_id.get(f"nts-pool:127.0.0.1:{ke_port}#1")
                second = by_id.get(f"nts-pool:127.0.0.1:{ke_port}#2")
                if not first or not second:
                    return None
                if first.get("authenticated", 0) < 2 or second.get("authenticated", 0) < 2:
                    return None
                used = [m for m in (first, second) if m["state"] in ("*", "+")]
                twice = [m for m in (first, second) if "not counted twice" in m["detail"]]
                # one is used once its filter has its start-up samples
                return document if len(used) == 1 and len(twice) == 1 else None

            document = wait_for(settled, 60, "one member used, the other its duplicate")
            first, second = sorted(document["sources"],
                                   key=lambda s: "not counted twice" in s["detail"])
            assert second["state"] == "?", second
            assert f"127.0.0.1:{ntp_port}" in second["detail"]
            assert first["source_id"] in second["detail"]
            # each member ran in a worker of its own
            pids = {p["worker_id"]: p["pid"] for p in document.get("processes", [])}
            assert pids.get(first["source_id"]) != pids.get(second["source_id"])
            text = daemon.ctl("status").stdout
            assert "not counted twice" in text
            # the duplicate was asked once for a new key exchange; chronyd names the same
            # server again, so it stays the duplicate and is not asked again
            wait_for(lambda: "a new key exchange for another server" in daemon.log(), 20,
                     "the duplicate's new key exchange")
            time.sleep(3)
            assert daemon.log().count("a new key exchange for another server") == 1
            again = {s["source_id"]: s for s in daemon.status()["sources"]}  # type: ignore[index]
            assert "not counted twice" in again[second["source_id"]]["detail"]
