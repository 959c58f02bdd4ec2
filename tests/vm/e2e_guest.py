"""Guest side of the e2e scenario: the daemons (ntpd-py, chrony) one after the other in one guest.

Run by :mod:`tests.vm.e2e` as root inside the QEMU guest, whose clock is its
own. The independent truth recorder (:mod:`tests.vm.phc_truth`) runs for the
whole boot, so both daemons are measured by the same reader on the same boot's
floor. Then, per daemon in the order given: put the kernel clock back to
nominal (after the first), measure the floor with no daemon (the spread of
PHC − CLOCK_REALTIME) and fit the PHC timeline against MONOTONIC_RAW; start
the raw-clock NTP server on loopback (the second source, once, from the first
floor); detune the guest clock; start the daemon; let it run; for ntpd-py also
check privileges and inject the faults (:mod:`tests.vm.e2e_ntpd`); stop its
processes by PID. Everything goes to the run directory shared with the host:
``truth.jsonl`` (one record a second and one per clock step) at its top, and
per daemon a subdirectory with ``events.jsonl``, ``summary.json`` and the
daemon's log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .guest_tools import CtlCodes, KernelClock
from .phc_truth import fit_line, spread

__all__ = ["Driver", "Plan", "run_boot"]

NTP_PORT = 11123
PHC = "/dev/ptp0"


@dataclass(frozen=True)
class Plan:
    """How long each phase lasts (seconds) and how the clock is detuned."""

    floor_s: float = 30.0
    steady_s: float = 180.0  # from the daemon's launch (longer if it synchronizes late, below)
    window_s: float = 60.0  # the steady-state figures cover the last window_s of it
    # a daemon that took long to synchronize (a slow machine) still gets this much
    # time between its synchronization and the steady-state window
    settle_before_window_s: float = 10.0
    settle_s: float = 15.0  # after each fault
    outage_s: float = 30.0  # rmmod igb .. modprobe igb
    detune_offset_s: float = 0.2
    detune_ppm: float = 100.0
    detune_via: str = "tick"  # "tick": unseen by a daemon that writes only freq; or "freq"
    log_level: str = "info"  # ntpd-py's; "debug" logs every sample and its filter's state
    algorithm: str = ""  # ntpd-py's [synchronization.algorithm] lines, for experiments


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Driver:
    def __init__(self, out: Path, plan: Plan, daemon: str, truth: Path | None = None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.truth = truth or out / "truth.jsonl"
        self.plan = plan
        self.daemon = daemon
        self.kernel = KernelClock()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.summary: dict[str, Any] = {"daemon": daemon, "plan": asdict(plan)}
        self._events = open(out / "events.jsonl", "a", buffering=1)  # noqa: SIM115

    # -- bookkeeping --------------------------------------------------------------------

    def event(self, what: str, **fields: Any) -> int:
        now = mono_ns()
        self._events.write(json.dumps({"mono": now, "what": what, **fields}) + "\n")
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if not isinstance(v, dict | list))
        print(f"e2e[{self.daemon}] {what} {detail}".rstrip(), flush=True)
        return now

    def spawn(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        log = open(self.out / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kw)
        log.close()
        self.procs[name] = proc
        self.event("spawn", name=name, pid=proc.pid)
        return proc

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.event("stopped", name=name, returncode=proc.returncode)
        return proc.returncode

    def sleep_until(self, deadline_ns: int) -> None:
        while (left := deadline_ns - mono_ns()) > 0:
            time.sleep(min(left / 1e9, 1.0))

    # -- phases ---------------------------------------------------------------------------

    def truth_records(self, since_ns: int) -> list[dict[str, Any]]:
        records = []
        for line in self.truth.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("k") == "s" and rec["mono"] >= since_ns:
                records.append(rec)
        return records

    def measure_floor(self) -> dict[str, Any]:
        start = self.event("floor-start", seconds=self.plan.floor_s)
        self.sleep_until(start + round(self.plan.floor_s * 1e9))
        recs = [r for r in self.truth_records(start) if "err" in r]
        if len(recs) < 5:
            raise RuntimeError(f"only {len(recs)} PHC readings during the floor measurement")
        trend, residuals = fit_line([(r["mono"], r["err"]) for r in recs])
        # The PHC timeline as a line in MONOTONIC_RAW: phc = real − err, raw = real − rr.
        line, line_res = fit_line([(r["real"] - r["rr"], r["real"] - r["err"]) for r in recs])
        windows = sorted(r["w"] for r in recs)
        floor = {
            **spread(residuals),
            "slope_ppm": trend.slope * 1e6,
            "median_window_ns": windows[len(windows) // 2],
            "line": [line.x0, line.y0, line.c, line.slope],
            "line_residual": spread(line_res),
        }
        self.summary["floor"] = floor
        self.event("floor", sd_ns=round(floor["sd_ns"], 1), range_ns=round(floor["range_ns"]),
                   slope_ppm=round(floor["slope_ppm"], 3), n=floor["n"])
        return floor

    def detune(self) -> None:
        before = self.kernel.state()
        after = self.kernel.detune(round(self.plan.detune_offset_s * 1e9), self.plan.detune_ppm,
                                   self.plan.detune_via)
        self.summary["detune"] = {"before": before, "after": after}
        self.event("detuned", offset_s=self.plan.detune_offset_s, ppm=self.plan.detune_ppm,
                   via=self.plan.detune_via, tick_us=after["tick_us"],
                   freq_ppm=after["freq_ppm"])

    def run_chrony(self) -> None:
        conf = self.out / "chrony.conf"
        conf.write_text(
            f"refclock PHC {PHC} poll 0 dpoll 0\n"
            f"server 127.0.0.1 port {NTP_PORT} minpoll 0 maxpoll 2 iburst\n"
            "makestep 0.1 3\n"
            "pidfile /run/chrony-e2e.pid\n"
            "cmdport 0\n"
            "bindcmdaddress /\n"
        )
        launch = self.event("launch", daemon="chrony")
        self.summary["launch_mono"] = launch
        self.spawn("chronyd", ["chronyd", "-d", "-f", str(conf)])
        self.sleep_until(launch + round(self.plan.steady_s * 1e9))
        self.event("steady-end")
        self.summary["kernel_end"] = self.kernel.state()
        self.stop("chronyd")

    def run_daemon(self, codes: CtlCodes | None) -> None:
        if self.daemon == "chrony":
            self.run_chrony()
        else:
            from .e2e_ntpd import NtpdRun

            assert codes is not None
            NtpdRun(self, codes).run()

    def finish(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1))
        self._events.close()

    def fail(self, exc: BaseException) -> None:
        self.event("error", message=f"{type(exc).__name__}: {exc}")
        self.summary["error"] = f"{type(exc).__name__}: {exc}"


def run_boot(out: Path, plans: dict[str, Plan], order: list[str], codes: CtlCodes | None) -> int:
    """Every daemon of `order` in this boot, one after the other, against one truth record."""
    truth = out / "truth.jsonl"
    boot = Driver(out, plans[order[0]], "boot", truth)
    boot.summary = {"order": order}
    python = sys.executable
    try:
        # the guest's init leaves loopback down; the NTP source lives on it
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        boot.spawn("truth", [python, "-m", "tests.vm.phc_truth", "record",
                             "--out", str(truth), "--device", PHC])
        time.sleep(2.0)  # its first reading, before the floor window opens
        for index, daemon in enumerate(order):
            seg = Driver(out / daemon, plans[daemon], daemon, truth)
            seg.summary.update(order=order, segment=index)
            try:
                if index:
                    # the previous daemon's frequency, tick and PLL state must not
                    # carry over: this one starts where the first one started
                    seg.summary["reset"] = seg.kernel.reset()
                    seg.event("clock-reset", **seg.summary["reset"])
                floor = seg.measure_floor()
                if "ntp-server" not in boot.procs:
                    boot.spawn("ntp-server", [python, "-m", "tests.vm.raw_ntp_server",
                                              "--listen", f"127.0.0.1:{NTP_PORT}", "--line",
                                              ",".join(str(v) for v in floor["line"])])
                time.sleep(1.0)
                seg.detune()
                seg.run_daemon(codes)
            except Exception as exc:
                seg.fail(exc)
                raise
            finally:
                seg.finish()
        return 0
    except Exception as exc:
        boot.fail(exc)
        raise
    finally:
        boot.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.e2e_guest",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--daemons", required=True,
                        help="comma-separated, in the order they run: ntpd-py,chrony")
    parser.add_argument("--out", required=True, help="the run directory shared with the host")
    parser.add_argument("--plans", default="{}",
                        help="JSON object: daemon -> object of Plan fields")
    parser.add_argument("--ctl", help="SCHEMA,REQUEST,REPLY codes of the control protocol")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or os.environ.get("NTPDPY_IN_VM") != "1":
        print("e2e_guest: runs only as root inside the QEMU guest (python -m tests.vm e2e)",
              file=sys.stderr)
        return 2
    order = args.daemons.split(",")
    if not order or not set(order) <= {"ntpd-py", "chrony"} or len(set(order)) != len(order):
        parser.error(f"--daemons {args.daemons!r}: ntpd-py and/or chrony, each once")
    given = json.loads(args.plans)
    plans = {d: Plan(**given.get(d, {})) for d in order}
    codes = CtlCodes.parse(args.ctl) if args.ctl else None
    return run_boot(Path(args.out), plans, order, codes)


if __name__ == "__main__":
    sys.exit(main())
