"""The real daemon with a `mode = "pps"` source next to a sock source (no PPS device here).

The test machine has no /dev/ppsN (tests/integration/test_pps_guest.py reads a real
one in the QEMU guest; tests/workers/test_pps_task.py drives the worker at the fd
level), so this checks the wiring: the supervisor opens the configured path and
hands the fd to the pps worker, whose status says what the kernel answered
(/dev/null: not a PPS device), and a missing device is reported as such, while
the sock source next to it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal

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


def _open_paths(pid: int) -> set[str]:
    paths = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return paths


def test_a_reload_that_drops_a_pps_source_closes_its_device() -> None:
    """The supervisor holds each pps device open for the daemon's life; a reload that
    removes the source must release it (no fd leak, the device free for others)."""
    daemon = Daemon("", clock="observe")
    sock = str(daemon.dir / "gps.sock")
    first, second = str(daemon.dir / "ppsA"), str(daemon.dir / "ppsB")
    for path in (first, second):
        with open(path, "wb"):
            pass  # a regular file opens like a device; the worker says "not a PPS device"

    def body(pps: str) -> str:
        return f"""
[[source]]
mode = "sock"
path = "{sock}"
precision = 1e-3

[[source]]
mode = "pps"
path = "{pps}"
precision = 1e-7

[synchronization]
minimum-agreeing-sources = 1
"""

    daemon.write_config(body(first))
    with daemon:
        daemon.wait_running([f"pps:{first}"])
        assert first in _open_paths(daemon.pid)
        daemon.write_config(body(second))
        daemon.signal(signal.SIGHUP)
        daemon.wait_running([f"pps:{second}"])
        opened = wait_for(lambda: (lambda p: p if first not in p else None)(
            _open_paths(daemon.pid)), 20, "the dropped pps device closed by the supervisor")
        assert second in opened
        assert f"pps:{first}" not in daemon.workers()
