"""A compromised worker makes a forbidden system call: only it dies, and it comes back.

The daemon runs as root with every role (simulated PHC, an NTP peer on
loopback, the NTP server, the metrics exporter). Every child must carry a
seccomp filter (`Seccomp: 2`). Then gdb, attached as root, makes the running
NTP worker — the role that parses network input — call fork(2) for real, as
code injected into it would. The kernel kills it with SIGSYS; the supervisor
reports "killed by seccomp (SIGSYS)" and restarts it; nothing else restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, wait_for
from tests.integration.test_ops import free_tcp_port
from tests.ntp_helpers import free_udp_port, is_root, serve_cmd, started

from .conftest import Figures
from .load import measure

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(not is_root(), reason="the daemon must drop privileges (run as root)"),
    pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
]


def _seccomp_modes(pid: int) -> list[int]:
    """The seccomp mode of every thread of `pid` (2 = filter)."""
    modes = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Seccomp:"):
                modes.append(int(line.split()[1]))
    return modes


def _forbidden_syscall_number() -> tuple[str, int]:
    import pyseccomp

    arch = pyseccomp.system_arch()
    for name in ("fork", "ptrace"):  # aarch64 has no fork(2): ptrace is forbidden everywhere
        number = pyseccomp.resolve_syscall(arch, name)
        if number >= 0:
            return name, number
    raise AssertionError("neither fork nor ptrace resolves on this architecture")


def test_a_worker_making_a_forbidden_call_dies_alone_and_is_restarted(
    figures: Figures,
) -> None:
    with started(serve_cmd(f"127.0.0.1:{(peer := free_udp_port())}", "--stratum", "1"),
                 ready="listening on"):
        body = f"""
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[[source]]
mode = "server"
address = "127.0.0.1:{peer}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1

[[server]]
listen = "127.0.0.1:{free_udp_port()}"

[synchronization]
minimum-agreeing-sources = 1

[observability]
metrics-exporter-listen = "127.0.0.1:{free_tcp_port()}"
"""
        victim = f"ntp:127.0.0.1:{peer}"
        ids = ["clock-control", "ptp:/dev/ptp0", victim, "server", "metrics"]
        with Daemon(body, user="nobody") as daemon:
            daemon.wait_running(ids)
            workers = daemon.workers()
            pids = {w: int(workers[w]["pid"]) for w in ids}
            for worker_id, pid in pids.items():
                modes = _seccomp_modes(pid)
                assert modes and all(m == 2 for m in modes), (worker_id, modes)
            wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"),
                     40, "synchronized")
            before = measure({"supervisor": daemon.pid, **pids}, 1.0)

            name, number = _forbidden_syscall_number()
            # gdb itself may trip an internal assertion when the inferior dies under it
            # (several threads gone at once); the outcome is judged from the supervisor.
            gdb = subprocess.run(
                ["gdb", "-p", str(pids[victim]), "-batch", "-nx",
                 "-iex", "maint set internal-error corefile no",
                 "-iex", "maint set internal-error quit yes",
                 "-ex", f"call (long)syscall({number})"],
                capture_output=True, text=True, timeout=60, cwd=daemon.dir,
            )
            gdb_output = gdb.stdout + gdb.stderr
            t_kill = time.monotonic()

            def restarted() -> dict | None:
                entry = daemon.workers().get(victim, {})
                new_pid = entry.get("pid")
                if new_pid and new_pid != pids[victim] and entry.get("state") == "running":
                    return entry
                return None

            entry = wait_for(restarted, 20, f"{victim} restarted (gdb said: {gdb_output[-800:]})")
            restart_s = time.monotonic() - t_kill
            assert "killed by seccomp (SIGSYS)" in entry["last_exit"]
            assert f"lost {victim} (killed by seccomp (SIGSYS))" in daemon.log()
            text = daemon.ctl("workers")
            assert text.returncode == 0 and "killed by seccomp (SIGSYS)" in text.stdout
            as_json = daemon.ctl("workers", "--json")
            assert as_json.returncode == 0, as_json.stderr
            listed = {p["worker_id"]: p for p in json.loads(as_json.stdout)["processes"]}
            assert listed[victim]["last_exit"] == "killed by seccomp (SIGSYS)"
            assert listed[victim]["restarts"] >= 1
            # Only the victim died: every other child keeps its pid and its filter.
            after_workers = daemon.workers()
            for worker_id in ids:
                if worker_id != victim:
                    assert after_workers[worker_id]["pid"] == pids[worker_id], worker_id
            assert all(m == 2 for m in _seccomp_modes(int(entry["pid"])))

            # The restarted worker is heard again: its sample count keeps rising.
            def samples() -> int:
                for source in (daemon.status() or {}).get("sources", []):
                    if source["source_id"] == victim:
                        return int(source["samples"])
                return 0

            first = wait_for(samples, 20, "samples from the restarted worker")
            wait_for(lambda: samples() > first, 20, "more samples after the restart")
            after = measure({"supervisor": daemon.pid, **{w: int(after_workers[w]["pid"])
                                                          for w in ids}}, 1.0)
            assert os.path.exists(f"/proc/{daemon.pid}")
            figures.record(
                scenario="forbidden system call in a worker",
                attacker=f"compromised ntp worker (code injected with gdb: {name}(2))",
                load="1 call",
                outcome=(f"only that worker killed (SIGSYS), reported 'killed by seccomp', "
                         f"restarted in {restart_s:.1f} s; others kept their pids"),
                before=before, after=after,
            )
