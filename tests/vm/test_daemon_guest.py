"""The real daemon inside the QEMU guest: PTP-only sync, privileges on a real kernel, rmmod.

Started as root (the guest's), with workers as nobody:nogroup. Polling goes
through the control socket in-process (the same document `ntpctl status
--json` prints; each `ntpctl` process costs ~10 s of CPU under TCG); the CLI
itself is run once to check what a user sees. The `system` clock backend runs
here only: the guest's clock is its own.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import Daemon, wait_for

from .guest_tools import CAP_SYS_TIME, KernelClock, proc_status

pytestmark = pytest.mark.vm

PTP_ONLY = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[synchronization]
minimum-agreeing-sources = 1
"""
PTP_ID = "ptp:/dev/ptp0"
NOBODY = 65534  # nobody / nogroup in Debian's base passwd
WORKER_UIDS = (61184, 65519)  # [daemon] worker-uid-range's default
START_S = 120  # the daemon's Python start-up alone is ~25 s of CPU under TCG


def status(daemon: Daemon) -> dict[str, Any] | None:
    """`ntpctl status --json`'s document, asked in-process."""
    from ntpd_py.supervisor.ctl_client import CtlError, request
    from ntpd_py.supervisor.ctl_format import reply_json

    try:
        return reply_json(request(str(daemon.runtime / "observe"), "status"), "status")
    except CtlError:
        return None


def synchronized(daemon: Daemon) -> dict[str, Any] | None:
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
    doc = status(daemon)
    return doc if doc and doc["clock"]["synchronized"] else None


def source(doc: dict[str, Any] | None, source_id: str) -> dict[str, Any]:
    return next((s for s in (doc or {}).get("sources", []) if s["source_id"] == source_id), {})


def pids(doc: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {p["worker_id"]: (p["role"], p["pid"]) for p in doc["processes"] if p["pid"]}


@pytest.fixture(scope="module", autouse=True)
def _igb_loaded() -> None:
    subprocess.run(["modprobe", "igb"], check=True, timeout=60)
    assert Path("/dev/ptp0").exists()


@pytest.fixture(scope="module")
def observing() -> Iterator[Daemon]:
    with Daemon(PTP_ONLY, clock="observe", user="nobody") as daemon:
        wait_for(lambda: synchronized(daemon), START_S, "the observing daemon to synchronize")
        yield daemon


def _check_workers(doc: dict[str, Any], clock_control_caps: int) -> None:
    procs = pids(doc)
    assert {"supervisor", "clock-control", PTP_ID} <= set(procs), procs
    for worker_id, (role, pid) in procs.items():
        st = proc_status(pid)
        if role == "supervisor":
            assert st.uids[0] == 0
            continue
        want = clock_control_caps if role == "clock-control" else 0
        if role == "clock-control":  # the configured [daemon] user/group
            assert set(st.uids) == {NOBODY} and set(st.gids) == {NOBODY}, (worker_id, st)
            assert st.groups == (NOBODY,), (worker_id, st)
        else:  # a uid (and gid) of its own from worker-uid-range, in no group
            uid = st.uids[0]
            assert WORKER_UIDS[0] <= uid <= WORKER_UIDS[1], (worker_id, st)
            assert set(st.uids) == {uid} and set(st.gids) == {uid}, (worker_id, st)
            assert st.groups in ((), (uid,)), (worker_id, st)
        assert (st.cap_eff, st.cap_prm) == (want, want), (worker_id, hex(st.cap_eff))
        assert st.cap_inh == st.cap_amb == 0 and st.cap_bnd == want, (worker_id, st)
        assert st.no_new_privs == 1, (worker_id, st)


def test_ptp_only_config_synchronizes_in_observe_mode(observing: Daemon) -> None:
    result = observing.ctl("status", "--json", timeout=120)  # what a user runs
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["clock"]["synchronized"] is True and doc["clock"]["clock_backend"] == "observe"
    ptp = source(doc, PTP_ID)
    assert ptp["state"] == "*" and ptp["kind"] == "ptp" and ptp["method"] == "extended"
    assert abs(ptp["offset_s"]) < 1e-3  # the igb PHC tracks the guest clock closely


def test_observe_mode_workers_and_clock_control_hold_no_capability(observing: Daemon) -> None:
    doc = status(observing)
    assert doc is not None
    _check_workers(doc, clock_control_caps=0)


def test_rmmod_igb_source_unreachable_then_reopened_through_the_supervisor(
    observing: Daemon,
) -> None:
    # The worker runs as nobody and /dev/ptp0 is root-only (0600): the new device
    # can only reach it through the supervisor (DeviceRequest, fd over the link).
    assert Path("/dev/ptp0").stat().st_mode & 0o077 == 0
    worker_pid = pids(status(observing) or {"processes": []})[PTP_ID][1]
    subprocess.run(["rmmod", "igb"], check=True, timeout=60)
    try:
        gone = wait_for(
            lambda: (d := status(observing)) and source(d, PTP_ID)["worker_state"]
            in ("unreachable", "waiting") and d, 30, "the PTP source to be unreachable")
        assert source(gone, PTP_ID)["state"] != "*"
    finally:
        subprocess.run(["modprobe", "igb"], check=True, timeout=60)
    # a kept fd of the removed device would pin its index: the new PHC must be ptp0 again
    assert Path("/sys/class/ptp/ptp0").exists()
    back = wait_for(
        lambda: (d := status(observing)) and source(d, PTP_ID)["worker_state"] == "running"
        and source(d, PTP_ID)["state"] == "*" and d, 60, "the PTP source to recover")
    assert pids(back)[PTP_ID][1] == worker_pid  # the same worker, not a restart
    assert back["clock"]["synchronized"]
    log = observing.log()
    assert "vanished" in log and "ENODEV" in log


def test_system_clock_clock_control_holds_exactly_cap_sys_time() -> None:
    kernel = KernelClock()
    with Daemon(PTP_ONLY, clock="system", user="nobody") as daemon:
        doc = wait_for(lambda: synchronized(daemon), START_S, "the daemon to synchronize")
        assert doc["clock"]["clock_backend"] == "system"
        _check_workers(doc, clock_control_caps=1 << CAP_SYS_TIME)
        # and it did steer with that capability: the kernel's clock is marked synchronized
        assert not kernel.state()["unsync"]
