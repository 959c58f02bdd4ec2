"""The ntpd-py half of the e2e scenario: run it as root on the guest clock, check, break it.

After the steady phase: the privilege check (/proc of every process) and four
faults, each written to ``events.jsonl`` as a start/end pair with what was
observed (the host adds the true error and the steps inside each window):
kill -9 of the PTP worker, `rmmod igb` for `outage_s` then `modprobe igb`,
kill -9 of clock-control, and SIGHUP with a changed configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .guest_tools import (
    CAP_SYS_TIME,
    CtlCodes,
    KernelClock,
    ctl_status,
    phc_clock_id,
    proc_status,
)
from .phc_truth import fit_line, read_extended, real_minus_raw

if TYPE_CHECKING:
    from .e2e_guest import Driver

__all__ = ["NtpdRun", "config_text"]

RUNTIME = "/run/ntpd-py-e2e"
PHC = "/dev/ptp0"
PTP_ID = "ptp:/dev/ptp0"
NTP_ID = "ntp:127.0.0.1:11123"


def config_text(precision_s: float, ntp_poll_max: int, port: int,
                log_level: str = "info", algorithm: str = "") -> str:
    extra = f"\n[synchronization.algorithm]\n{algorithm}\n" if algorithm else ""
    return f"""\
[observability]
log-level = "{log_level}"

[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = {precision_s:.3g}
interval = 0

[[source]]
mode = "server"
address = "127.0.0.1:{port}"
poll-interval-limits = {{ min = 0, max = {ntp_poll_max} }}
initial-poll-interval = 0

[synchronization]
minimum-agreeing-sources = 1

[daemon]
runtime-dir = "{RUNTIME}"
state-dir = "{RUNTIME}-state"
clock = "system"
user = "nobody"
group = "nogroup"
{extra}"""


def _mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class NtpdRun:
    def __init__(self, driver: Driver, codes: CtlCodes) -> None:
        self.d = driver
        self.codes = codes
        self.conf = driver.out / "ntpd-py.toml"
        self.log = driver.out / "ntpd-py.log"
        self.faults: list[dict[str, Any]] = []
        driver.summary["faults"] = self.faults

    # -- helpers ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        return ctl_status(f"{RUNTIME}/observe", self.codes)

    def pids(self, status: dict[str, Any] | None = None) -> dict[str, int]:
        status = status or self.status() or {}
        return {p["worker_id"]: p["pid"] for p in status.get("processes", []) if p["pid"]}

    @staticmethod
    def source(status: dict[str, Any] | None, source_id: str) -> dict[str, Any]:
        for src in ((status or {}).get("clock") or {}).get("sources", []):
            if src["source_id"] == source_id:
                return dict(src)
        return {}

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float) -> tuple[Any, float]:
        start = _mono()
        while _mono() - start < timeout_s * 1e9:
            result = check()
            if result:
                return result, (_mono() - start) / 1e9
            time.sleep(0.25)
        raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")

    def log_since(self, offset: int) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def fault(self, name: str) -> tuple[int, dict[str, Any]]:
        start = self.d.event("fault-start", fault=name)
        record: dict[str, Any] = {"fault": name, "start": start}
        self.faults.append(record)
        return start, record

    def fault_end(self, record: dict[str, Any], settle_from: int) -> None:
        self.d.sleep_until(settle_from + round(self.d.plan.settle_s * 1e9))
        record["end"] = self.d.event("fault-end", fault=record["fault"],
                                     observed=record.get("observed", {}))

    # -- phases -----------------------------------------------------------------------------

    def run(self) -> None:
        floor = self.d.summary["floor"]
        precision = max(floor["sd_ns"], 1.0) * 1e-9
        self.d.summary["precision_s"] = precision
        self.conf.write_text(config_text(precision, 2, 11123, self.d.plan.log_level,
                                           self.d.plan.algorithm))
        launch = self.d.event("launch", daemon="ntpd-py", precision_s=precision)
        self.d.summary["launch_mono"] = launch
        ntpd = str(Path(sys.executable).parent / "ntpd-py")
        self.d.spawn("ntpd-py", [ntpd, "run", "-c", str(self.conf)])
        synced = self.watch_start(launch)
        plan = self.d.plan
        self.d.sleep_until(max(launch + round(plan.steady_s * 1e9),
                               synced + round((plan.settle_before_window_s + plan.window_s) * 1e9)))
        self.d.event("steady-end")
        self.d.summary["status_steady_end"] = self.status()
        self.d.summary["privileges"] = self.privileges()
        self.kill_worker()
        self.rmmod()
        self.kill_clock_control()
        self.sighup()
        self.d.summary["kernel_end"] = self.d.kernel.state()
        self.d.summary["status_end"] = self.status()
        self.d.summary["daemon_pids_end"] = self.pids(self.d.summary["status_end"])
        self.d.stop("ntpd-py")
        left = [p for p in self.d.summary["daemon_pids_end"].values() if Path(f"/proc/{p}").exists()]
        self.d.summary["left_after_stop"] = left

    def watch_start(self, launch: int) -> int:
        """Note when ntpd-py answers, and when it calls itself synchronized."""
        _, answered = self.wait_for("the control socket", self.status, 120)
        self.d.event("answering", after_s=round(answered, 1))

        def synced() -> bool:
            status = self.status() or {}
            return bool(((status.get("clock") or {}).get("system") or {}).get("synchronized"))

        self.wait_for("synchronized", synced, max(120.0, self.d.plan.steady_s))
        now = _mono()
        self.d.summary["synchronized_after_s"] = (now - launch) / 1e9
        self.d.event("synchronized", after_launch_s=round((now - launch) / 1e9, 1))
        return now

    def privileges(self) -> dict[str, Any]:
        status = self.status() or {}
        procs = {p["worker_id"]: p for p in status.get("processes", [])}
        report: dict[str, Any] = {"processes": {}}
        for worker_id, info in procs.items():
            if info["pid"]:
                report["processes"][worker_id] = {"role": info["role"],
                                                  **proc_status(info["pid"]).as_dict()}
        system = (status.get("clock") or {}).get("system") or {}
        report["kernel"] = self.d.kernel.state()
        report["clock_backend"] = system.get("clock_backend")
        report["daemon_steps"] = system.get("steps")
        report["problems"] = _privilege_problems(report["processes"])
        self.d.event("privileges", problems=len(report["problems"]),
                     kernel_total_ppm=round(report["kernel"]["total_ppm"], 3))
        return report

    # -- faults -----------------------------------------------------------------------------

    def kill_worker(self) -> None:
        old = self.pids()[PTP_ID]
        freq_before = self.d.kernel.state()["freq_ppm"]
        start, record = self.fault("kill -9 PTP worker")
        os.kill(old, signal.SIGKILL)
        time.sleep(0.3)
        freq_down = self.d.kernel.state()["freq_ppm"]

        def restarted() -> int | None:
            status = self.status()
            pid = self.pids(status).get(PTP_ID)
            src = self.source(status, PTP_ID)
            age = src.get("last_sample_age_s")
            fresh = age is not None and age < (_mono() - start) / 1e9 - 0.5
            return pid if pid and pid != old and fresh else None

        new, after = self.wait_for("the PTP worker to restart and sample", restarted, 60)
        record["observed"] = {"old_pid": old, "new_pid": new, "sampling_again_after_s":
                              round(after + 0.3, 1), "freq_before_ppm": freq_before,
                              "freq_while_down_ppm": freq_down}
        self.fault_end(record, _mono())

    def rmmod(self) -> None:
        start, record = self.fault("rmmod igb")
        subprocess.run(["rmmod", "igb"], check=True, timeout=60)
        seen: list[tuple[float, str, str, str]] = []

        def note() -> None:
            status = self.status()
            ptp, ntp = self.source(status, PTP_ID), self.source(status, NTP_ID)
            seen.append((round((_mono() - start) / 1e9, 1), ptp.get("worker_state", "?"),
                         ptp.get("state", "?"), ntp.get("state", "?")))

        while _mono() < start + round(self.d.plan.outage_s * 1e9):
            note()
            time.sleep(0.5)
        back = self.d.event("modprobe igb")
        subprocess.run(["modprobe", "igb"], check=True, timeout=60)
        name = Path("/sys/class/ptp/ptp0/clock_name")
        clock_name = name.read_text().strip() if name.exists() else "(no ptp0)"
        record["phc_restore"] = self.restore_phc_timeline(start)
        record["phc_restored"] = self.d.event("phc-restored", **record["phc_restore"])

        def recovered() -> bool:
            note()
            return seen[-1][1] == "running" and seen[-1][2] in ("*", "+")

        # the PTP source retries a vanished device with a backoff doubling to 64 s
        _, after = self.wait_for("the PTP source to recover", recovered, 75)
        unreachable = [s for s in seen if s[1] in ("unreachable", "waiting")]
        record["observed"] = {
            "ptp0_after_modprobe": clock_name,
            "ptp_unreachable_after_s": unreachable[0][0] if unreachable else None,
            "ntp_selected_during_outage": any(s[3] == "*" for s in seen if s[0] > 3
                                              and s[0] < self.d.plan.outage_s),
            "recovered_after_modprobe_s": round(after, 1),
            "timeline": seen[:: max(1, len(seen) // 25)],
        }
        record["modprobe"] = back
        self.fault_end(record, _mono())
        final = self.status()
        record["observed"]["at_end"] = {
            "ptp": self.source(final, PTP_ID).get("state"),
            "ntp": self.source(final, NTP_ID).get("state"),
            "synchronized": ((final or {}).get("clock") or {}).get("system", {}).get(
                "synchronized"),
        }

    def restore_phc_timeline(self, removed_at: int) -> dict[str, int]:
        """Put the reloaded igb PHC back on the timeline it had before `rmmod`.

        The igb driver starts a new PHC from the guest clock (under QEMU some
        50-200 µs off it), where a ptp_kvm or ENA PHC would come back on the
        host's timeline. ADJ_SETOFFSET on the PHC (a pure timecounter shift in
        the driver) by the offset to the old timeline, extrapolated in
        MONOTONIC_RAW from the minute before, undoes that.
        """
        recs = [r for r in self.d.truth_records(removed_at - 60_000_000_000)
                if "err" in r and r["mono"] < removed_at]
        line, _ = fit_line([(r["real"] - r["rr"], r["real"] - r["err"]) for r in recs])

        def off_timeline(fd: int) -> int:
            real, phc, _ = read_extended(fd)
            return phc - line.at(real - real_minus_raw()[0])

        fd = os.open(PHC, os.O_RDWR | os.O_CLOEXEC)
        try:
            before = off_timeline(fd)
            KernelClock(phc_clock_id(fd)).shift(-before)
            return {"reinit_offset_ns": before, "residual_ns": off_timeline(fd)}
        finally:
            os.close(fd)

    def kill_clock_control(self) -> None:
        old = self.pids()["clock-control"]
        offset = self.log.stat().st_size
        _, record = self.fault("kill -9 clock-control")
        os.kill(old, signal.SIGKILL)

        def back() -> int | None:
            pid = self.pids().get("clock-control")
            return pid if pid and pid != old else None

        new, after = self.wait_for("clock-control to restart", back, 60)
        text = self.log_since(offset)
        record["observed"] = {"old_pid": old, "new_pid": new, "answering_after_s": round(after, 1),
                              "resumed_from_saved_state": "resuming from the saved state" in text,
                              "daemon_logged_step": "stepping the clock" in text}
        self.fault_end(record, _mono())

    def sighup(self) -> None:
        before = self.pids()
        offset = self.log.stat().st_size
        self.conf.write_text(config_text(self.d.summary["precision_s"], 3, 11123,
                                         self.d.plan.log_level, self.d.plan.algorithm))
        _, record = self.fault("SIGHUP, NTP source poll limits changed")
        os.kill(self.d.procs["ntpd-py"].pid, signal.SIGHUP)
        _, after = self.wait_for("the reload", lambda: "reload done" in self.log_since(offset), 30)
        time.sleep(2.0)
        now = self.pids()
        record["observed"] = {
            "reload_logged_after_s": round(after, 1),
            "restarted": sorted(w for w in before if now.get(w) != before[w]),
            "kept": sorted(w for w in before if now.get(w) == before[w]),
            "log": [ln for ln in self.log_since(offset).splitlines() if "reload" in ln][-3:],
        }
        self.fault_end(record, _mono())


def _privilege_problems(procs: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    worker_uids: dict[int, str] = {}
    for worker_id, info in procs.items():
        if worker_id == "supervisor":
            continue
        want = (1 << CAP_SYS_TIME) if info["role"] == "clock-control" else 0
        if info["role"] == "clock-control":
            # The configured user: it owns the runtime directory and its state file.
            if set(info["uids"]) != {65534} or set(info["gids"]) != {65534}:
                problems.append(f"{worker_id}: uids {info['uids']} gids {info['gids']}")
        else:
            # Every other worker: a uid (and gid) of its own from worker-uid-range.
            uids = set(info["uids"])
            uid = min(uids)
            if len(uids) != 1 or set(info["gids"]) != {uid} or not 61184 <= uid <= 65519:
                problems.append(f"{worker_id}: uids {info['uids']} gids {info['gids']}")
            elif uid in worker_uids:
                problems.append(f"{worker_id}: shares uid {uid} with {worker_uids[uid]}")
            worker_uids[uid] = worker_id
        if int(info["CapEff"], 16) != want or int(info["CapPrm"], 16) != want:
            problems.append(f"{worker_id}: CapEff {info['CapEff']} CapPrm {info['CapPrm']}")
        if int(info["CapAmb"], 16) or int(info["CapInh"], 16):
            problems.append(f"{worker_id}: ambient/inheritable capabilities left")
        if info["NoNewPrivs"] != 1:
            problems.append(f"{worker_id}: NoNewPrivs {info['NoNewPrivs']}")
    if not any(i["role"] == "clock-control" for i in procs.values()):
        problems.append("no clock-control process found")
    return problems
