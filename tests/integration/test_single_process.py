"""`ntpd-py run --single-process`: the same loops in one process, no ZeroMQ, no threads."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port, serve_cmd, started

pytestmark = pytest.mark.integration


def me_age_s(pid: int) -> float:
    import time

    return time.time() - psutil.Process(pid).create_time()


def test_single_process_synchronizes_and_answers_ntpctl() -> None:
    port = free_udp_port()
    listen = free_udp_port()
    body = f"""
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[[source]]
mode = "server"
address = "127.0.0.1:{port}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1

[[server]]
listen = "127.0.0.1:{listen}"

[synchronization]
minimum-agreeing-sources = 1
"""
    with started(serve_cmd(f"127.0.0.1:{port}", "--stratum", "1"), ready="listening on"), \
            Daemon(body, extra_args=("--single-process",)) as daemon:
        seen: list[object] = []

        def synchronized() -> dict[str, object] | None:
            d = daemon.status()
            seen[:] = [d]
            return d if d and d["clock"]["synchronized"] and all(
                s["samples"] > 0 for s in d["sources"]) else None

        try:
            document = wait_for(synchronized, 40, "synchronized with both sources")
        except AssertionError as error:
            raise AssertionError(f"{error}; last status: {seen[0] if seen else None!r}") from None
        assert {s["source_id"] for s in document["sources"]} == {
            "ptp:/dev/ptp0", f"ntp:127.0.0.1:{port}"}
        (proc,) = document["processes"]
        assert proc["pid"] == daemon.pid and proc["state"] == "single-process"
        # its own uptime, not the machine's (the table was once aged from mono 0)
        assert 0 < proc["uptime_s"] < me_age_s(daemon.pid) + 5
        me = psutil.Process(daemon.pid)
        assert me.children() == []
        assert me.num_threads() == 1
        with open(f"/proc/{daemon.pid}/maps") as maps:
            assert "zmq" not in maps.read()
        # the server, inside the same process, answers with the published state
        probe = __import__("subprocess").run(
            [__import__("sys").executable, "-m", "ntpd_py.workers.ntp_probe",
             f"127.0.0.1:{listen}", "--count", "1", "--burst", "1", "--json", "--poll-min",
             "0", "--initial-poll", "0"], capture_output=True, text=True, timeout=60)
        sample = json.loads(probe.stdout.splitlines()[0])["sample"]
        assert sample["stratum"] == 1, probe.stdout  # the PHC is stratum 0
        assert abs(sample["offset_s"]) < 0.01
