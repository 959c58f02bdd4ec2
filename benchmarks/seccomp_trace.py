"""Which system calls each role really makes, next to what its seccomp profile allows.

Runs the daemon as root under `strace -ff` with `[daemon] seccomp = "log"`
(nothing is killed), with every role: a simulated PHC, an NTP peer on loopback
(our standalone server), an NTS source against the daemon's own NTS-KE and NTP
servers (key rotation every 4 s), the NTP server answering a request, the metrics
exporter scraped, a sock source fed SOCK samples (good and malformed), a pps
source on /dev/null (no PPS device: it only checks it); then
SIGHUP (reload and log reopen) and a SIGKILL of clock-control (every worker
reconnects, clock-control restores its state).
For each role it prints the calls made after the filter was installed and the
ones its profile lacks — the list to extend `plumbing/seccomp_profiles.py` with.

    sudo .venv/bin/python benchmarks/seccomp_trace.py [--keep DIR]

Exit status 1 when some role made a call outside its profile.
Everything runs on loopback and is stopped by PID.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ntpd_py.plumbing.seccomp import role_calls  # noqa: E402
from ntpd_py.plumbing.seccomp_profiles import CONDITIONAL, DENIED_WITH_ERRNO  # noqa: E402

from tests.integration.daemon import BIN, Daemon, wait_for  # noqa: E402
from tests.ntp_helpers import free_udp_port, serve_cmd, started  # noqa: E402

# set_process_name() keeps 15 bytes: "ntpd-py:clock-c" is clock-control.
SHORT_NAMES = {"clock-c": "clock-control"}


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exercise(out_prefix: str) -> None:
    from ntpd_py.workers.nts_ke_client import KeOutcome, key_exchange

    from tests.nts_helpers import make_pki

    metrics_port = _free_tcp_port()
    server_port = free_udp_port()
    ke_port = _free_tcp_port()
    pki_dir = tempfile.mkdtemp(prefix="ntpd-pki-", dir="/tmp")
    pki = make_pki(Path(pki_dir))
    os.chmod(pki_dir, 0o755)  # the NTS source's worker (its own uid) reads the CA file
    os.chmod(pki.server_key, 0o600)  # root's: the supervisor hands it to the KE worker
    with started(serve_cmd(f"127.0.0.1:{(peer := free_udp_port())}", "--stratum", "1"),
                 ready="listening on"):
        sock_dir = tempfile.mkdtemp(prefix="ntpd-sock-", dir="/tmp")
        sock_path = f"{sock_dir}/gps.sock"
        body = f"""
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[[source]]
mode = "sock"
path = "{sock_path}"
precision = 1e-3

# no PPS device here: the pps worker checks /dev/null (ENOTTY) and reports it
[[source]]
mode = "pps"
path = "/dev/null"
precision = 1e-7

[[source]]
mode = "server"
address = "127.0.0.1:{peer}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1

# NTS, client and server: the daemon's own NTS-KE server and NTP server, as a source
[[source]]
mode = "nts"
address = "127.0.0.1:{ke_port}"
certificate-authority = "{pki.ca_cert}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1

[[server]]
listen = "127.0.0.1:{server_port}"

[[nts-ke-server]]
listen = "127.0.0.1:{ke_port}"
certificate-chain-path = "{pki.server_cert}"
private-key-path = "{pki.server_key}"
ntp-port = {server_port}

[keyset]
key-rotation-interval = 4

[synchronization]
minimum-agreeing-sources = 1

[observability]
metrics-exporter-listen = "127.0.0.1:{metrics_port}"
"""
        daemon = Daemon(body, user="nobody")
        daemon.write_config(body, daemon._daemon_table + 'seccomp = "log"\n')
        log = open(daemon.log_path, "w")  # noqa: SIM115
        daemon._log = log
        daemon.proc = subprocess.Popen(
            ["strace", "-ff", "-o", out_prefix, str(BIN / "ntpd-py"), "run", "-c",
             str(daemon.config_path)], stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            ids = ["clock-control", "ptp:/dev/ptp0", f"ntp:127.0.0.1:{peer}", "server",
                   "metrics", f"sock:{sock_path}", "pps:/dev/null", f"nts-ke:127.0.0.1:{ke_port}",
                   f"nts:127.0.0.1:{ke_port}"]
            daemon.wait_running(ids, timeout=60)
            _feed_sock(sock_path)
            wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"),
                     60, "synchronized")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(2)
                client.sendto(b"\x23" + bytes(47), ("127.0.0.1", server_port))
                client.recv(100)
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
            outcome = key_exchange("127.0.0.1", ke_port, ca_file=str(pki.ca_cert), timeout=5)
            if not isinstance(outcome, KeOutcome):
                raise SystemExit(f"no key exchange with the daemon: {outcome}")
            time.sleep(5)  # a key rotation (every 4 s) reaches the server and KE workers

            def nts_authenticated() -> bool:
                sources = (daemon.status() or {}).get("sources") or []
                return any(s["source_id"] == f"nts:127.0.0.1:{ke_port}"
                           and s.get("authenticated", 0) >= 2 for s in sources)

            # the NTS source's own key exchange (retried with backoff if it came before
            # the NTS-KE worker listened) and authenticated polls: the server's NTS path
            wait_for(nts_authenticated, 90, "the NTS source authenticated")
            supervisor = psutil.Process(daemon.pid).children()[0].pid  # strace's child
            os.kill(supervisor, signal.SIGHUP)
            time.sleep(3)
            os.kill(int(daemon.workers()["clock-control"]["pid"]), signal.SIGKILL)
            daemon.wait_running(ids, timeout=30)
            _feed_sock(sock_path)
            time.sleep(5)
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
            os.kill(supervisor, signal.SIGTERM)
            daemon.proc.wait(30)
        finally:
            daemon.stop()
            daemon.cleanup()
            shutil.rmtree(sock_dir, ignore_errors=True)
            shutil.rmtree(pki_dir, ignore_errors=True)


def _feed_sock(path: str) -> None:
    """A few SOCK samples, as gpsd sends them, and a malformed datagram."""
    from ntpd_py.core.refclock_sock import encode_sock_sample

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as feeder:
        for _ in range(5):
            feeder.sendto(encode_sock_sample(time.time_ns(), 0.001), path)
            time.sleep(0.2)
        feeder.sendto(b"\x00" * 7, path)


def _analyse(directory: Path, prefix: str) -> dict[str, collections.Counter[str]]:
    parent: dict[int, tuple[int, bool]] = {}
    role: dict[int, str] = {}
    lines: dict[int, list[str]] = {}
    for path in directory.glob(prefix + ".*"):
        tid = int(path.suffix[1:])
        lines[tid] = path.read_text(errors="replace").splitlines()
        for line in lines[tid]:
            made = re.match(r"^(clone3?|fork|vfork)\(.*\)\s+= (\d+)$", line)
            if made:
                parent[int(made.group(2))] = (tid, "CLONE_THREAD" in line)
            named = re.search(r'prctl\(PR_SET_NAME, "ntpd-py:([a-z-]+)"', line)
            if named:
                role[tid] = SHORT_NAMES.get(named.group(1), named.group(1))

    def role_of(tid: int) -> str | None:
        while tid not in role and tid in parent and parent[tid][1]:
            tid = parent[tid][0]
        return role.get(tid)

    used: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for tid, text in lines.items():
        name = role_of(tid)
        if name is None:
            continue
        start = 0
        if tid in role:  # a process's main thread: only what follows its filter counts
            installed = [i for i, line in enumerate(text) if line.startswith("seccomp(")]
            if not installed:
                continue
            start = installed[-1] + 1
        for line in text[start:]:
            call = re.match(r"^([a-z0-9_]+)\(", line)
            if call:
                used[name][call.group(1)] += 1
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="keep the strace files in this directory")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("strace") is None:
        print("run as root, with strace installed", file=sys.stderr)
        return 2
    directory = Path(args.keep or tempfile.mkdtemp(prefix="ntpd-seccomp-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _exercise(str(directory / "trace"))
        used = _analyse(directory, "trace")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    missing_any = False
    for name, counts in sorted(used.items()):
        allowed = role_calls(name) | set(CONDITIONAL.get(name, {})) | set(DENIED_WITH_ERRNO)
        missing = sorted(set(counts) - allowed)
        missing_any |= bool(missing)
        print(f"{name}: {len(counts)} calls made, {len(allowed)} allowed")
        print("  made:   " + " ".join(f"{c}×{n}" for c, n in sorted(counts.items())))
        print("  MISSING from the profile: " + (" ".join(missing) or "none"))
    return 1 if missing_any else 0


if __name__ == "__main__":
    sys.exit(main())
