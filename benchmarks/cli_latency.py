"""How long the command-line programs take, as ratios to a bare interpreter start.

Starts a real ntpd-py (the supervisor and its processes; `clock = "simulated"`,
one simulated PHC: nothing but a simulated clock is steered, no network) and,
when chrony is installed, chronyd -x (never steers) answering commands on a
loopback UDP port of its own. Then times, as the median of N runs each:

    python -c pass                      the bare interpreter (this virtualenv's)
    ntpctl status / status --json       against the running daemon
    ntpd-py validate -c FILE            a shipped example configuration
    ntpd-py --help
    chronyc -n tracking                 against that chronyd, for reference

and prints each time with its ratio to the bare interpreter, and how long the
daemon itself takes to answer a status request (asked from this warm process). Targets (issue 19):
`ntpctl status` <= 6x, `ntpd-py validate` <= 10x. Everything is stopped by PID.

    .venv/bin/python benchmarks/cli_latency.py [--runs 21]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.daemon import Daemon, wait_for  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLE = REPO / "deploy" / "examples" / "kvm-guest.toml"
SIM_PTP = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[synchronization]
minimum-agreeing-sources = 1
"""
TARGETS = {"ntpctl status": 6.0, "ntpd-py validate": 10.0}


def median_s(cmd: list[str], runs: int, expect: int = 0) -> float:
    """Median wall time of `cmd` (output discarded); a run with another status is an error."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=60)
        times.append(time.perf_counter() - started)
        if result.returncode != expect:
            raise SystemExit(f"{' '.join(cmd)} exited {result.returncode}: "
                             f"{result.stderr.decode(errors='replace')[-500:]}")
    return statistics.median(times)


def daemon_answer_s(config: str, runs: int) -> float:
    """Median time of a status request from this (already warm) process: the daemon's part."""
    from ntpd_py.supervisor.ctl_client import locate, request_data

    control, runtime_dir = locate(config)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        request_data(control, "status", runtime_dir)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_chronyd(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """chronyd -x (no steering), no NTP port, commands on a private loopback UDP port."""
    cmdport = free_udp_port()
    conf = workdir / "chrony.conf"
    conf.write_text(
        f"port 0\ncmdport {cmdport}\nbindcmdaddress 127.0.0.1\ncmdallow 127.0.0.1\n"
        f"pidfile {workdir}/chronyd.pid\ndriftfile {workdir}/chrony.drift\n"
        "local stratum 10\n")
    proc = subprocess.Popen(["chronyd", "-x", "-d", "-f", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, cmdport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per command (median)")
    args = parser.parse_args()
    python = sys.executable
    ntpctl, ntpd = str(BIN / "ntpctl"), str(BIN / "ntpd-py")
    daemon = Daemon(SIM_PTP)
    chronyd: subprocess.Popen[bytes] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="chrony-", dir="/tmp"))
    rows: list[tuple[str, float]] = []
    try:
        daemon.start()
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"], timeout=60)
        status = [ntpctl, "-c", str(daemon.config_path), "status"]
        wait_for(lambda: "synchronized" in subprocess.run(status, capture_output=True,
                                                         text=True).stdout, 60, "status")
        chronyc: list[str] | None = None
        if shutil.which("chronyd") and shutil.which("chronyc"):
            chronyd, cmdport = start_chronyd(workdir)
            chronyc = ["chronyc", "-n", "-h", "127.0.0.1", "-p", str(cmdport), "tracking"]
            wait_for(lambda: subprocess.run(chronyc, capture_output=True).returncode == 0,
                     20, "chronyd answering")
        commands: list[tuple[str, list[str]]] = [
            ("python -c pass", [python, "-c", "pass"]),
            ("ntpctl status", status),
            ("ntpctl status --json", [*status, "--json"]),
            ("ntpd-py validate", [ntpd, "validate", "-c", str(EXAMPLE)]),
            ("ntpd-py --help", [ntpd, "--help"]),
        ]
        if chronyc is not None:
            commands.append(("chronyc -n tracking", chronyc))
        for _name, cmd in commands:  # warm the page cache
            subprocess.run(cmd, capture_output=True, timeout=60)
        for name, cmd in commands:
            rows.append((name, median_s(cmd, args.runs)))
        answer_s = daemon_answer_s(str(daemon.config_path), args.runs)
    finally:
        daemon.stop()
        daemon.cleanup()
        if chronyd is not None:
            chronyd.terminate()
            try:
                chronyd.wait(10)
            except subprocess.TimeoutExpired:
                chronyd.kill()
                chronyd.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
    bare = rows[0][1]
    print(f"median of {args.runs} runs each ({python})")
    print(f"{'command':<24} {'time':>9} {'ratio':>7}  target")
    for name, seconds in rows:
        target = TARGETS.get(name)
        verdict = "" if target is None else (
            f"<= {target:g}x {'met' if seconds / bare <= target else 'NOT met'}")
        print(f"{name:<24} {seconds * 1e3:7.1f}ms {seconds / bare:6.1f}x  {verdict}")
    print(f"of which the daemon's answer (one status request from a warm process): "
          f"{answer_s * 1e3:.1f}ms")
    if chronyd is None:
        print("chronyc: not installed, no reference")


if __name__ == "__main__":
    main()
