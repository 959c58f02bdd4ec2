"""A compromised nts-pool member cannot silence an honest one by naming its server.

clock-control counts one NTP server once across a pool's members, and which
server a member polls is only that member's word (its status). Real daemon as
root (each member its own worker and uid), real chronyd 4.3 as the pool's
NTS-KE and NTP server (`-x`, stopped by PID), a real impostor process on member
1's own bus endpoint as member 1's uid: it names another server, then member
2's again. Member 2, there first, must keep being counted; member 1 is the one
shown as the duplicate.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.test_identity import IMPOSTOR, Forked, _slot_path, _uid_of
from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_daemon_nts_chrony import nts_pool_config
from tests.integration.test_nts_chrony import chronyd_nts, pki, shared_dir, wait_for_ke
from tests.ntp_helpers import free_udp_port, have, is_root
from tests.nts_helpers import Pki, free_tcp_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (have("chronyd") and is_root()),
                       reason="needs chronyd, and root for the workers' own uids"),
]

__all__ = ["pki", "shared_dir"]  # fixtures reused from test_nts_chrony


def _status_frame(source_id: str, host: str, port: int) -> str:
    from ntpd_py.ipc.framing import encode
    from ntpd_py.ipc.messages import SourceStatus

    return encode(SourceStatus(source_id=source_id, kind="ntp", name=f"{host}:{port}",
                               resolved=host, state="running", poll_log2=0, nts=True)).hex()


def _members(document: dict | None, ke_port: int) -> tuple[dict, dict] | None:  # type: ignore[type-arg]
    if not document:
        return None
    by_id = {s["source_id"]: s for s in document["sources"]}
    one = by_id.get(f"nts-pool:127.0.0.1:{ke_port}#1")
    two = by_id.get(f"nts-pool:127.0.0.1:{ke_port}#2")
    return (one, two) if one and two else None


def test_a_member_naming_another_members_server_silences_only_itself(
        shared_dir: Path, pki: Pki, figures: Figures) -> None:
    ntp_port, ke_port = free_udp_port(), free_tcp_port()
    body = nts_pool_config(ke_port, pki)
    one_id, two_id = f"nts-pool:127.0.0.1:{ke_port}#1", f"nts-pool:127.0.0.1:{ke_port}#2"
    with chronyd_nts(shared_dir / "chrony", pki, ntp_port, ke_port):
        wait_for_ke(ke_port, pki)
        with Daemon(body, clock="observe") as daemon:
            def settled() -> dict | None:  # type: ignore[type-arg]
                document = daemon.status()
                members = _members(document, ke_port)
                if members is None or any(m.get("authenticated", 0) < 2 for m in members):
                    return None
                used = [m for m in members if m["state"] in ("*", "+")]
                twice = [m for m in members if "not counted twice" in m["detail"]]
                return document if len(used) == 1 and len(twice) == 1 else None

            wait_for(settled, 60, "one member used, the other its duplicate")
            pids = {p["worker_id"]: p["pid"] for p in daemon.status()["processes"]}  # type: ignore[index]
            uid_one = _uid_of(pids[one_id])
            assert uid_one != _uid_of(pids[two_id])
            # Member 1, compromised, first names a server nobody uses (so member 2 is
            # alone on chronyd's and keeps it), then chronyd's again: the lower number
            # once won such a tie, silencing the honest member 2.
            frames = ",".join([_status_frame(one_id, "127.0.0.2", 9),
                               _status_frame(one_id, "127.0.0.1", ntp_port)])
            impostor = Forked(uid_one, IMPOSTOR, str(_slot_path(daemon, uid_one)),
                              "impostor", frames, "1")
            try:
                out = impostor.communicate(timeout=30)
                assert "sent" in out and impostor.returncode == 0, out
            finally:
                impostor.stop()
            started = time.monotonic()

            def after_the_claims() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
                members = _members(daemon.status(), ke_port)
                if members is None:
                    return None
                one, two = members
                return members if (two["state"] in ("*", "+")
                                   and "not counted twice" in one["detail"]) else None

            one, two = wait_for(after_the_claims, 40,
                                "member 2 counted, member 1 its duplicate")
            settle_s = time.monotonic() - started
            assert two_id in one["detail"] and f"127.0.0.1:{ntp_port}" in one["detail"]
            assert "not counted twice" not in two["detail"]
            # it stays that way: the real member 1 keeps naming chronyd's server
            time.sleep(3)
            one, two = _members(daemon.status(), ke_port)  # type: ignore[misc]
            assert two["state"] in ("*", "+") and "not counted twice" in one["detail"], (one, two)
            figures.record(
                scenario="nts-pool member names another member's server",
                attacker="compromised nts-pool member 1 (its own uid) on its own bus endpoint",
                load="2 status messages: another server, then member 2's server again",
                outcome=f"member 2 counted ({two['state']}) {settle_s:.1f} s later and 3 s "
                        f"after; member 1 shown as the duplicate: {one['detail']!r}")
