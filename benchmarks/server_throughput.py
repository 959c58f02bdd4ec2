"""NTP server throughput on loopback: chronyd vs our server (1 process, N SO_REUSEPORT processes).

    python benchmarks/server_throughput.py [--seconds 3] [--rounds 3] [--processes N]
                                           [--sockets 16] [--window 32] [--pin] [--daemon]

Compiles ``benchmarks/ntp_loadgen.c`` with gcc (a closed-loop generator using
sendmmsg/recvmmsg, ``--sockets`` source ports with ``--window`` requests in flight each),
starts the three servers side by side on loopback ports:

* ``chronyd -x`` (never touches the clock) with ``local stratum 1``, no ``ratelimit``;
* ``python -m ntpd_py.workers.ntp_serve`` — one process;
* N ``ntp_serve --reuseport`` processes sharing one port;

and with ``--daemon`` the whole daemon too (``ntpd-py run``, simulated clock, one
``[[server]]``): its server worker as it really runs — forked by the supervisor, its
own uid and seccomp filter when run as root, clock state over its bus endpoint —

then loads one server at a time for ``--seconds`` (after a 0.5 s warm-up), in
``--rounds`` rounds whose order rotates, and prints replies/s per run, the median per
server and the ratios of the medians to chronyd. The machine's other load shows up as
noise: look at the per-round figures and the load average printed with them. ``--pin``
pins the generator to the last CPU and the single-process servers to CPU 0.

Every process is stopped by PID at the end, also on errors. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN_C = HERE / "ntp_loadgen.c"
REQUEST = bytes([0x23]) + bytes(39) + b"benchmrk"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout_s: float = 15.0) -> None:
    end = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < end:
            s.sendto(REQUEST, ("127.0.0.1", port))
            try:
                s.recvfrom(100)
                return
            except TimeoutError:
                pass
    raise RuntimeError(f"no NTP server answers on 127.0.0.1:{port}")


def compile_loadgen(workdir: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the load generator")
    binary = workdir / "ntp_loadgen"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(binary), str(LOADGEN_C)], check=True)
    return binary


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def start_chronyd(workdir: Path, port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    workdir.chmod(0o777)  # chronyd drops root and writes its pid/drift files here
    conf = workdir / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 1\nallow 127.0.0.1\ncmdport 0\n"
        f"pidfile {workdir}/chronyd.pid\ndriftfile {workdir}/drift\n"
    )
    return subprocess.Popen(pinned(["chronyd", "-x", "-d", "-f", str(conf)], cpu),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_ours(port: int, reuseport: bool, cpu: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ntpd_py.workers.ntp_serve", "--listen", f"127.0.0.1:{port}",
           "--stratum", "2"]
    if reuseport:
        cmd.append("--reuseport")
    return subprocess.Popen(pinned(cmd, cpu), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_daemon(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """The real daemon serving on `port` (simulated clock: nothing steered); its config path."""
    ddir = workdir / "daemon"
    ddir.mkdir()
    ddir.chmod(0o755)
    user = '\nuser = "nobody"\ngroup = "nogroup"' if os.geteuid() == 0 else ""
    conf = ddir / "ntp.toml"
    conf.write_text(
        f'[[server]]\nlisten = "127.0.0.1:{port}"\n\n[daemon]\nclock = "simulated"\n'
        f'runtime-dir = "{ddir}/run"\nstate-dir = "{ddir}/state"{user}\n')
    ntpd = Path(sys.executable).parent / "ntpd-py"
    proc = subprocess.Popen([str(ntpd), "run", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return proc, str(conf)


def daemon_server_pids(supervisor: int, timeout_s: float = 15.0) -> list[int]:
    """The pids of the daemon's server worker(s) (process name ntpd-py:server)."""
    import psutil

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        kids = psutil.Process(supervisor).children()
        found = [k.pid for k in kids if k.name() == "ntpd-py:server"]
        if found:
            return found
        time.sleep(0.1)
    raise RuntimeError("the daemon started no server worker")


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor, then SIGKILL by PID whatever of its tree is left."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    stop([proc])
    for kid in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            kid.kill()


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, seconds (from /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_load(
    loadgen: Path, port: int, args: argparse.Namespace, cpu: int | None
) -> dict[str, float]:
    cmd = pinned([str(loadgen), "127.0.0.1", str(port), str(args.seconds), str(args.sockets),
                  str(args.window)], cpu)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         timeout=args.seconds + 30).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    p.add_argument("--sockets", type=int, default=16)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--pin", action="store_true")
    p.add_argument("--daemon", action="store_true",
                   help="also load the real daemon's server worker (ntpd-py run)")
    args = p.parse_args()
    if shutil.which("chronyd") is None:
        raise SystemExit("chronyd is needed (Debian package chrony)")
    ncpu = os.cpu_count() or 1
    gen_cpu = ncpu - 1 if args.pin else None
    one_cpu = 0 if args.pin else None
    print(f"# {platform.node()}: {ncpu} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}, {args.seconds:g} s per run, {args.rounds} rounds, "
          f"generator: {args.sockets} sockets x {args.window} in flight"
          + (", pinned" if args.pin else ""))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ntp-bench-") as tmp:
        workdir = Path(tmp)
        loadgen = compile_loadgen(workdir)
        ports = {"chronyd": free_port(), "ours x1": free_port(),
                 f"ours x{args.processes} (SO_REUSEPORT)": free_port()}
        if args.daemon:
            ports["ntpd-py daemon (server worker)"] = free_port()
        names = list(ports)
        daemon: subprocess.Popen[bytes] | None = None
        try:
            procs.append(start_chronyd(workdir, ports[names[0]], one_cpu))
            procs.append(start_ours(ports[names[1]], False, one_cpu))
            procs.extend(start_ours(ports[names[2]], True, None) for _ in range(args.processes))
            pids = {names[0]: [procs[0].pid], names[1]: [procs[1].pid],
                    names[2]: [proc.pid for proc in procs[2:]]}
            if args.daemon:
                daemon, _ = start_daemon(workdir, ports[names[3]])
                pids[names[3]] = daemon_server_pids(daemon.pid)
            for port in ports.values():
                wait_ready(port)
            results: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    cpu0 = cpu_seconds(pids[name])
                    res = run_load(loadgen, ports[name], args, gen_cpu)
                    # CPU over the whole run, warm-up included: divide by all replies sent.
                    cpu_us = (cpu_seconds(pids[name]) - cpu0) * 1e6
                    total = res["replies"] * (args.seconds + 0.5) / max(res["seconds"], 1e-9)
                    results[name].append(res["replies_per_s"])
                    cpu[name].append(cpu_us / max(total, 1))
                    print(f"round {r + 1}  {name:32s} {res['replies_per_s']:>9.0f} replies/s  "
                          f"{cpu_us / max(total, 1):5.1f} µs CPU/reply  "
                          f"(sent {res['sent']:.0f}, replies {res['replies']:.0f}, "
                          f"kod {res['kod']:.0f}, bad {res['bad']:.0f}; "
                          f"load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            stop(procs)
            if daemon is not None:
                stop_tree(daemon)
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians[names[0]]
    print("\nmedians over the rounds:")
    for name in names:
        ratio = medians[name] / base if base else float("nan")
        print(f"  {name:32s} {medians[name]:>9.0f} replies/s   ratio to chronyd {ratio:.2f}   "
              f"{statistics.median(cpu[name]):.1f} µs CPU/reply")
    for name in names[1:]:
        per_round = [o / c for o, c in zip(results[name], results[names[0]], strict=True) if c]
        print(f"  per-round ratios {name}: " + ", ".join(f"{x:.2f}" for x in per_round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
