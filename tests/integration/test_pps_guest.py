"""A real kernel PPS device, and real gpsd feeding a sock source from it, in the QEMU guest.

The guest gets an emulated ISA parallel port; `pps_parport` makes /dev/pps0 from its
interrupt, which tests/vm/pps_guest.py raises once a second through the port's
registers (QEMU raises IRQ 7 on a control-register write with interrupts enabled).
So the kernel's PPS core time-stamps real interrupts, our reader (PPS_GETCAP,
PPS_GETPARAMS, PPS_FETCH with a timeout) reads them, and gpsd, given /dev/pps0,
writes its chrony SOCK samples to a socket made by workers/refclock_io.py.

Why not gpsfake: gpsd does no time service for a pty (its test harness), so under
gpsfake it never opens the chrony socket (checked with gpsd 3.22 at -D 9); and
gpsd's chrony socket carries only PPS-timed samples. One QEMU boot, ~1 min (TCG).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.vm.harness import REPO, HarnessUnavailable, run_in_guest

pytestmark = pytest.mark.integration

NS = 1_000_000_000
# TCG interrupt latency: the kernel's stamp follows our register write by this much at most
IRQ_LATENCY_BOUND_NS = 50_000_000
SOCK_ID = "sock:/run/chrony.pps0.sock"
PPS_ID = "pps:/dev/pps0"


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    if os.environ.get("NTPDPY_IN_VM") == "1":
        pytest.skip("boots its own guest: run on the host")
    try:
        result = run_in_guest(
            ".venv/bin/python -m tests.vm.pps_guest",
            cwd=REPO, nics=False, timeout_s=600,
            qemu_args=("-chardev", "null,id=lp0", "-device", "isa-parallel,chardev=lp0",
                       "-chardev", "null,id=s1", "-device", "isa-serial,chardev=s1"))
    except HarnessUnavailable as exc:
        pytest.skip(f"no QEMU guest here: {exc}")
    steps: dict[str, Any] = {}
    for line in result.output.splitlines():
        if line.startswith("PPSJSON "):
            entry = json.loads(line.removeprefix("PPSJSON "))
            steps.setdefault(entry["step"], []).append(entry)
    steps["_output"] = result.output
    steps["_rc"] = result.returncode
    return steps


def test_pps_parport_gives_a_real_pps_device(guest: dict[str, Any]) -> None:
    assert guest["_rc"] == 0, guest["_output"][-4000:]
    assert all(m["rc"] == 0 for m in guest["modprobe"]), guest["modprobe"]
    assert "pps0" in guest["devices"][0]["pps"]
    caps = guest["caps"][0]
    assert caps["canwait"] and caps["api"] == 1


def test_fetch_with_a_timeout_times_out(guest: dict[str, Any]) -> None:
    (timeout,) = guest["timeout"]
    assert timeout["event"] == "FetchTimedOut"
    assert 0.25 <= timeout["waited_s"] < 5.0


def test_reader_sees_every_pulse_with_the_kernels_stamp(guest: dict[str, Any]) -> None:
    (pulses,) = guest["pulses"]
    written, fetched = pulses["written"], pulses["fetched"]
    assert len(fetched) >= len(written) - 1 >= 4, pulses
    seqs = [seq for seq, _ in fetched]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for _, stamp in fetched:
        # each kernel stamp follows one of our register writes, within the IRQ latency
        assert any(0 <= stamp - w <= IRQ_LATENCY_BOUND_NS for w in written), (stamp, written)
    samples = guest.get("sample", [])
    assert len(samples) >= 4
    assert pulses["status"] == "running"
    for sample in samples:
        # the pulses were written at the top of local seconds: the offset is minus the latency
        assert -IRQ_LATENCY_BOUND_NS / NS <= sample["offset_s"] <= 0.0


def test_gpsd_writes_sock_samples_that_the_sock_source_accepts(guest: dict[str, Any]) -> None:
    if "gpsd-missing" in guest:
        pytest.skip("gpsd or gpspipe is not installed (Debian gpsd, gpsd-clients: tests/run.sh)")
    (run,) = guest["gpsd"]
    samples, fetched = run["samples"], run["fetched"]
    assert len(samples) >= 3, run
    assert run["drops"] == {} and run["overflow"] == 0
    kernel_stamps = [stamp for _, stamp in fetched]
    gpsd_own = {p["clock_sec"] * NS + p["clock_nsec"]:
                (p["real_sec"] - p["clock_sec"]) + (p["real_nsec"] - p["clock_nsec"]) / NS
                for p in run["gpsd_pps"]}
    assert gpsd_own, "gpspipe showed no PPS message"
    matched = 0
    for sample in samples:
        # gpsd's sample is stamped with the kernel's time of one of the pulses we fetched
        # (a timeval: rounded to the microsecond)
        assert any(abs(sample["time_ns"] - k) <= 1000 for k in kernel_stamps), (
            sample, kernel_stamps)
        own = [off for clock, off in gpsd_own.items() if abs(sample["time_ns"] - clock) <= 1000]
        if own:
            # and its offset is what gpsd itself reports for that pulse (real - clock)
            assert abs(sample["offset_s"] - own[0]) < 2e-6, (sample, own)
            matched += 1
        # the NMEA feed gave the pulse its second: the offset is minus the IRQ latency
        assert -IRQ_LATENCY_BOUND_NS / NS <= sample["offset_s"] <= 0.0
    assert matched >= 2


@pytest.mark.parametrize("mode", ["daemon", "single"])
def test_the_daemons_pps_and_sock_sources_on_the_real_device(guest: dict[str, Any],
                                                             mode: str) -> None:
    """`ntpd-py run` in the guest (and `--single-process`): gpsd -> the daemon's own socket
    (sock), /dev/pps0 (pps)."""
    if "gpsd-missing" in guest:
        pytest.skip("gpsd or gpspipe is not installed (Debian gpsd, gpsd-clients: tests/run.sh)")
    (log,) = guest[mode + "-log"]
    assert mode in guest, log["log"]
    (run,) = guest[mode]
    pps, sock = run["pps"], run["sock"]
    assert pps and sock, (run["history"], log["log"])
    # the sock source: gpsd's PPS-timed samples, every one accepted
    assert sock["samples"] >= 3, (sock, run["history"])
    assert not [k for k in sock["counters"] if k.startswith("drop:")], sock["counters"]
    # the pps source: the unprivileged worker's zero-timeout PPS_FETCH polls saw the pulses
    assert pps["worker_state"] == "running", (pps, run["history"], log["log"])
    assert pps["samples"] >= 8, (pps, run["history"])
    assert pps["state"] in ("*", "+"), (pps, run["history"])
    assert f"whole seconds from {SOCK_ID}" in pps["detail"], pps
    if mode == "daemon":  # each source in its own unprivileged process
        assert run["uids"].get(PPS_ID) not in (None, 0), run["uids"]
        assert run["uids"].get(SOCK_ID) not in (None, 0), run["uids"]
    # its offset is the kernel's stamp of a real pulse: minus the interrupt latency (in
    # observe mode less the virtual correction, which is as small as that latency)
    assert -IRQ_LATENCY_BOUND_NS / NS <= pps["last_offset_s"] <= IRQ_LATENCY_BOUND_NS / NS, pps
    # one sample per real pulse at most: nothing invented, and the worker kept up
    written = len(run["stamps"])
    assert pps["samples"] <= written, (pps["samples"], written)
