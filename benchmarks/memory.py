"""Memory and CPU of the whole ntpd-py process tree, next to chronyd's, in one run.

Starts four NTP servers on loopback (ntpd-py's standalone server), then
ntpd-py (simulated clock: 2 simulated PHCs polled every second, 4 NTP sources,
an NTP server) and measures, after a warm-up, PSS of the whole tree,
USS/PSS per process and the tree's CPU use over a steady-state window. Then
chronyd -x with a comparable configuration (the same 4 servers, 2 SHM
refclocks polled every second, serving NTP) for its PSS and CPU.

    sudo .venv/bin/python benchmarks/memory.py [--warmup 30] [--window 60]
        [--base-python /path/to/base/.venv/bin/python [--pairs 2]] [--no-chronyd]

With --base-python, the same measurement runs back to back (ours, then the
base's, `--pairs` times) with the `ntpd-py` installed beside that interpreter
(a worktree of an older commit with its own venv), and prints each pair's PSS
ratio and the mean: the figure of the "total memory within 5 %" target.

Targets (issue 4): whole tree <= 60 MB PSS, <= 0.5 % of one core at steady state.
Everything runs on loopback and is stopped by PID. The daemon's runtime
directory goes on tmpfs (/dev/shm) when there is one, as /run is on a real
system: clock-control rewrites its restart snapshot there every second, and on
a disk file system each rename costs journal work a deployment never pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def switches(pid: int) -> int:
    """Context switches of all the process's threads: about one per wake-up of an idle daemon."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as handle:
                for line in handle:
                    if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                        total += int(line.split()[-1])
        except OSError:
            pass
    return total


Row = tuple[str, int, int, int, float, float]


def measure(pid: int, window: float) -> tuple[list[Row], float]:
    procs = tree(pid)
    before = {p.pid: (sum(p.cpu_times()[:2]), switches(p.pid)) for p in procs}
    start = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - start
    cpu = 0.0
    rows = []
    for proc in procs:
        try:
            cpu0, sw0 = before.get(proc.pid, (0.0, 0))
            used = sum(proc.cpu_times()[:2]) - cpu0
            woke = (switches(proc.pid) - sw0) / elapsed
            cpu += used
            info = proc.memory_full_info()
            rows.append((proc.name(), proc.pid, info.pss, info.uss, 100.0 * used / elapsed, woke))
        except psutil.NoSuchProcess:
            pass
    return rows, 100.0 * cpu / elapsed


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def runtime_dir(workdir: Path) -> Path:
    """A runtime directory path the daemon creates itself (it refuses a world-writable
    one it did not make), below a fresh parent that every uid may pass through."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        parent = Path(tempfile.mkdtemp(prefix="ntpd-mem-run-", dir=shm))
    else:
        parent = workdir / "rundir"
        parent.mkdir()
    os.chmod(parent, 0o755)
    return parent / "run"


def ntpd_py_config(workdir: Path, ports: list[int], listen: int, run_dir: Path) -> Path:
    sources = "".join(
        f'[[source]]\nmode = "ptp"\npath = "/dev/ptp{i}"\nprecision = 5e-8\n\n' for i in (0, 1))
    sources += "".join(f'[[source]]\nmode = "server"\naddress = "127.0.0.1:{p}"\n\n'
                       for p in ports)
    user = 'user = "nobody"\ngroup = "nogroup"\n' if os.geteuid() == 0 else ""
    path = workdir / "ntp.toml"
    path.write_text(
        f'{sources}[[server]]\nlisten = "127.0.0.1:{listen}"\n\n'
        f'[synchronization]\nminimum-agreeing-sources = 1\n\n'
        f'[daemon]\nruntime-dir = "{run_dir}"\nstate-dir = "{workdir}/state"\n'
        f'clock = "simulated"\n{user}')
    return path


def chrony_config(workdir: Path, ports: list[int], listen: int) -> Path:
    path = workdir / "chrony.conf"
    servers = "".join(f"server 127.0.0.1 port {p} minpoll 4 maxpoll 10 iburst\n" for p in ports)
    path.write_text(
        f"{servers}refclock SHM 0 poll 0\nrefclock SHM 1 poll 0\n"
        f"port {listen}\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\n"
        f"pidfile {workdir}/chronyd.pid\ndriftfile {workdir}/chrony.drift\n")
    return path


def report(title: str, rows: list[Row], cpu: float) -> int:
    total = sum(r[2] for r in rows)
    print(f"\n{title}")
    print(f"  {'process':<18} {'pid':>7} {'PSS MB':>8} {'USS MB':>8} {'CPU %':>7}"
          f" {'wakeups/s':>10}")
    for name, pid, pss, uss, used, woke in rows:
        print(f"  {name:<18} {pid:>7} {pss / MB:8.1f} {uss / MB:8.1f} {used:7.2f} {woke:10.1f}")
    print(f"  {'total':<18} {'':>7} {total / MB:8.1f}     CPU {cpu:.2f} % of one core, "
          f"{sum(r[5] for r in rows):.1f} wakeups/s (context switches, all threads)")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--base-python", type=Path, default=None,
                        help="python of a venv holding the ntpd-py to compare against")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--no-chronyd", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ntpd-mem-", dir="/tmp"))
    os.chmod(workdir, 0o777)
    run_dir = runtime_dir(workdir)
    ports = [free_port() for _ in range(4)]
    servers = [subprocess.Popen([sys.executable, "-m", "ntpd_py.workers.ntp_serve", "--listen",
                                 f"127.0.0.1:{p}", "--stratum", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for p in ports]
    daemon = chronyd = None
    try:
        env = {**os.environ, "NTPD_PY_FORBID_SYSTEM_CLOCK": "1"}

        def run_ntpd_py(bin_dir: Path, title: str) -> int:
            nonlocal daemon, run_dir
            # a fresh runtime directory per run: the daemon refuses one it did not create
            shutil.rmtree(run_dir.parent, ignore_errors=True)
            run_dir = runtime_dir(workdir)
            config = ntpd_py_config(workdir, ports, free_port(), run_dir)
            daemon = subprocess.Popen([str(bin_dir / "ntpd-py"), "run", "-c", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env=env)
            time.sleep(args.warmup)
            if daemon.poll() is not None:
                raise SystemExit(f"{bin_dir / 'ntpd-py'} exited with {daemon.returncode}")
            rows, cpu = measure(daemon.pid, args.window)
            total = report(title, rows, cpu)
            stop(daemon)
            daemon = None
            shutil.rmtree(workdir / "state", ignore_errors=True)  # each run starts afresh
            return total

        title = "ntpd-py (2 PHC + 4 NTP + server, 1 s PHC polling)"
        ours = run_ntpd_py(BIN, title)
        if args.base_python is not None:
            base_bin = args.base_python.parent
            ratios = []
            for pair in range(args.pairs):
                mine = ours if pair == 0 else run_ntpd_py(BIN, title)
                base = run_ntpd_py(base_bin, f"base ntpd-py from {base_bin}")
                ratios.append(mine / base)
                print(f"\npair {pair + 1}: this tree {mine / MB:.1f} MB, base {base / MB:.1f} MB,"
                      f" ratio {mine / base:.4f} ({(mine / base - 1) * 100:+.1f} %)")
            mean = sum(ratios) / len(ratios)
            print(f"\nPSS this tree / base over {len(ratios)} pairs: mean {mean:.4f} "
                  f"({(mean - 1) * 100:+.1f} %; target <= +5 %), pairs "
                  + ", ".join(f"{(r - 1) * 100:+.1f} %" for r in ratios))
        if args.no_chronyd:
            return 0
        if shutil.which("chronyd") is None:
            print("\nchronyd not installed: no comparison")
            return 0
        chronyd = subprocess.Popen(["chronyd", "-x", "-d", "-f",
                                    str(chrony_config(workdir, ports, free_port()))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.warmup)
        rows, cpu = measure(chronyd.pid, args.window)
        theirs = report("chronyd -x (4 servers + 2 SHM refclocks at poll 0, serving)", rows, cpu)
        print(f"\nPSS ratio ntpd-py / chronyd: {ours / theirs:.1f}x "
              f"(target: ntpd-py <= 60 MB; measured {ours / MB:.1f} MB)")
    finally:
        for proc in [daemon, chronyd, *servers]:
            if proc is not None:
                stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
