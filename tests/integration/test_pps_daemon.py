"""The real daemon with a `mode = "pps"` source next to a sock source (no PPS device here).

The test machine has no /dev/ppsN (tests/integration/test_pps_guest.py reads a real
one in the QEMU guest; tests/workers/test_pps_task.py drives the worker at the fd
level), so this checks the wiring: the supervisor opens the configured path and
hands the fd to the pps worker, whose status says what the kernel answered
(/dev/null: not a PPS device), and a missing device is reported as such, while
the sock source next to it runs.
"""

from __future__ import annotations

import pytest

from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration


def test_pps_sources_report_what_their_device_is() -> None:
    daemon = Daemon("", clock="observe")
    missing = str(daemon.dir / "pps9")
    sock = str(daemon.dir / "gps.sock")
    daemon.write_config(f"""
[[source]]
mode = "sock"
path = "{sock}"
precision = 1e-3

[[source]]
mode = "pps"
path = "/dev/null"
precision = 1e-7

[[source]]
mode = "pps"
path = "{missing}"
precision = 1e-7

[synchronization]
minimum-agreeing-sources = 1
""")
    with daemon:
        ids = [f"sock:{sock}", "pps:/dev/null", f"pps:{missing}"]
        document = daemon.wait_running(ids)
        roles = {p["worker_id"]: p["role"] for p in document["processes"]}
        assert [roles[i] for i in ids] == ["sock", "pps", "pps"]

        def reported() -> dict[str, dict[str, object]] | None:
            sources = {s["source_id"]: s for s in (daemon.status() or {}).get("sources", [])}
            if all(sources.get(i, {}).get("worker_state") == "failed" for i in ids[1:]):
                return sources
            return None

        sources = wait_for(reported, 30, "both pps sources reporting")
        assert sources["pps:/dev/null"]["kind"] == "pps"
        assert "not a PPS device" in str(sources["pps:/dev/null"]["detail"])
        assert "could not be opened by the supervisor" in str(sources[f"pps:{missing}"]["detail"])
        # no feeder: the sock source waits (its first status may not have come yet)
        assert sources[f"sock:{sock}"]["worker_state"] in ("starting", "waiting")
        table = daemon.ctl("sources")
        assert table.returncode == 0 and " pps " in table.stdout, table.stdout
