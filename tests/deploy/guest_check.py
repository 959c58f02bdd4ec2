"""Inside the QEMU guest booted with systemd as PID 1: exercise the installed ntpd-py.service.

Run by the test unit ntpd-py-vmtest.service (tests/deploy/test_systemd_guest.py
writes it) with the installed virtualenv's Python, once ntpd-py.service is up
(or failed). Two phases in one boot: the test configuration (the igb PHC, the
guest's clock steered), then, after `systemctl stop`, ntpd-rs's default ntp.toml
under the same unit. Every check is recorded as {"name", "ok", "detail", "phase"} in
<run dir>/systemd-results.json, the unit's journal goes to journal.txt, and the
exit status to `rc`, which the host side reads. This guest's clock is its own:
here, and only here, the `system` clock backend steers a real clock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS: list[dict[str, Any]] = []
PHASE = "shipped"  # which configuration the checks run against (see main)
UNIT = "ntpd-py.service"
# The second phase's configuration, staged next to ntp.toml by the host side.
NTPD_RS_TOML = Path("/etc/ntpd-py/ntpd-rs-default.toml")
NTP_SERVER_UNIT = "ntpd-py-vmtest-ntpserver.service"
CAP_SYS_TIME = 1 << 25
# CAP_SETGID 6, CAP_SETUID 7, CAP_SETPCAP 8, CAP_KILL 5, CAP_NET_BIND_SERVICE 10, CAP_SYS_TIME 25
SUPERVISOR_BOUNDING = ((1 << 0) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10)
                       | CAP_SYS_TIME)  # + CAP_CHOWN 0: gives each worker its bus endpoint
NAME_LINE = re.compile(r"^(supervisor|clock-control|ptp:/dev/ptp_igb|server|metrics): "
                       r"(TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL): ")


def record(name: str, ok: bool, detail: object = "") -> bool:
    RESULTS.append({"name": name, "ok": bool(ok), "detail": str(detail)[:4000],
                    "phase": PHASE})
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    return bool(ok)


def sh(*cmd: str, timeout: float = 60, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["runuser", "-u", user, "--", *cmd] if user else list(cmd)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def show(unit: str, *props: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait(predicate: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return value


def status_of(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def children_of(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = status_of(int(entry.name))
            if st.get("PPid") == str(pid):
                found[int(entry.name)] = st.get("Name", "")
    return found


def main_pid() -> int:
    return int(show(UNIT, "MainPID").get("MainPID", "0"))


# -- the checks --------------------------------------------------------------------------------


def check_started() -> bool:
    svc = show(UNIT, "ActiveState", "SubState", "Result", "WatchdogUSec", "ExecMainStatus")
    ok = record("service active (READY=1 received, Type=notify)",
                svc.get("ActiveState") == "active" and svc.get("SubState") == "running", svc)
    record("watchdog armed (WatchdogSec=30)", svc.get("WatchdogUSec") == "30s", svc)
    other = show("systemd-timesyncd.service", "ActiveState")
    record("Conflicts=: systemd-timesyncd (wanted by sysinit.target here) is not running",
           other.get("ActiveState") != "active", other)
    return ok


def check_synchronized() -> None:
    def synchronized() -> str | None:
        text = show(UNIT, "StatusText").get("StatusText", "")
        return text if text.startswith("synchronized to /dev/ptp_igb") else None

    status = wait(synchronized, 120)
    record("STATUS= says synchronized to the PHC (system clock of this guest)",
           bool(status), status or sh("ntpctl", "status").stdout)
    phcs = sh("sh", "-c", "stat -c '%n %G %a' /dev/ptp[0-9]*").stdout.split("\n")
    record("the example udev rule: PHCs readable by group ntpd-py",
           all(line.endswith(" ntpd-py 640") for line in phcs if line), phcs)


def check_processes() -> None:
    supervisor = main_pid()
    sup = status_of(supervisor)
    record("supervisor runs as root with only the unit's capability bounding set",
           sup.get("Uid", "").split()[0] == "0"
           and int(sup.get("CapBnd", "0"), 16) == SUPERVISOR_BOUNDING, sup.get("CapBnd"))
    record("supervisor: no_new_privs and a seccomp filter",
           sup.get("NoNewPrivs") == "1" and sup.get("Seccomp") == "2", sup)
    uid = sh("id", "-u", "ntpd-py").stdout.strip()
    kids = children_of(supervisor)
    names = sorted(kids.values())
    record("children: clock-control, ptp, server, metrics", names == sorted(
        ["ntpd-py:clock-c", "ntpd-py:ptp", "ntpd-py:server", "ntpd-py:metrics"]), names)
    worker_uids = []
    for pid, name in kids.items():
        st = status_of(pid)
        keep = CAP_SYS_TIME if name == "ntpd-py:clock-c" else 0
        uids = st.get("Uid", "").split()
        if name == "ntpd-py:clock-c":
            # clock-control keeps the configured user (it owns /run/ntpd-py and its state)
            right_user, who = uids[:1] == [uid], "ntpd-py"
        else:
            # every other worker: a uid of its own from worker-uid-range
            right_user = len(set(uids)) == 1 and 61184 <= int(uids[0]) <= 65519
            who = "its own uid"
            worker_uids.append(uids[0] if uids else "")
        record(f"{name} runs as {who}, CapEff={keep:#x}, bounding {keep:#x}, nnp, seccomp",
               right_user and int(st.get("CapEff", "1"), 16) == keep
               and int(st.get("CapBnd", "1"), 16) == keep and st.get("NoNewPrivs") == "1"
               and st.get("Seccomp") == "2", {k: st.get(k) for k in
                                                ("Uid", "CapEff", "CapBnd", "NoNewPrivs",
                                                 "Seccomp")})
    record("each worker has a distinct uid", len(set(worker_uids)) == len(worker_uids),
           worker_uids)
    mounts = Path(f"/proc/{supervisor}/mountinfo").read_text()
    root_ro = any(line.split()[4] == "/" and " ro," in f" {line.split()[5]},"
                  for line in mounts.splitlines())
    record("ProtectSystem=strict: / is read-only for the service", root_ro)


def check_ntpctl() -> None:
    result = sh("ntpctl", "status", "--json")
    ok = result.returncode == 0
    document = json.loads(result.stdout) if ok else {}
    states = {p["worker_id"]: p["state"] for p in document.get("processes", [])}
    record("ntpctl status (root): every process running",
           ok and set(states.values()) == {"running"} and len(states) == 5, states or result)
    sh("useradd", "--system", "--no-create-home", "--groups", "ntpd-py", "operator1")
    sh("useradd", "--system", "--no-create-home", "outsider1")
    member = sh("ntpctl", "status", user="operator1")
    record("ntpctl status as a member of group ntpd-py", member.returncode == 0,
           member.stderr or member.stdout[:200])
    outsider = sh("ntpctl", "status", user="outsider1")
    record("ntpctl status as another user: 77 permission denied",
           outsider.returncode == 77 and "permission denied" in outsider.stderr, outsider.stderr)
    watch = sh("sh", "-c", "ntpctl watch --json | head -n 1", user="operator1", timeout=30)
    record("ntpctl watch --json as a member of group ntpd-py",
           watch.stdout.startswith('{"schema": 1, "command": "watch"'), watch.stdout[:200])


def check_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen("http://127.0.0.1:9975/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        record("metrics on 127.0.0.1:9975", False, exc)
        return
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    record("metrics: ntp_system_stratum and per-process figures served",
           "ntp_system_stratum" in samples and "ntpd_py_process_cpu_seconds_total" in samples
           and "ntpd_py_source_phc_window_seconds" in samples, sorted(samples)[:10])


def check_ntp_server() -> None:
    result = sh("ntpdig", "-t", "2", "127.0.0.1", timeout=30)
    record("NTP server on port 123 (bound by the supervisor) answers ntpdig",
           result.returncode == 0 and "127.0.0.1" in result.stdout, result.stdout + result.stderr)


def journal() -> str:
    return sh("journalctl", f"_SYSTEMD_UNIT={UNIT}", "-o", "cat", "--no-pager").stdout


def check_journal() -> None:
    lines = [line for line in journal().splitlines() if line.strip()]
    bad = [line for line in lines if not NAME_LINE.match(line)]
    record("journal: one line per event, role-prefixed, no timestamps of our own",
           lines and not bad, bad[:5])
    record("journal: READY logged with every worker up",  # (after a wait for the PHC, maybe)
           any("ready: clock-control and 3 worker(s) up" in line for line in lines))


def check_ntpd_rs_config() -> None:
    """ntpd-rs's default ntp.toml as is (its pool replaced by a loopback server, which
    ntpd-py-vmtest-ntpserver.service runs): observation-path /var/run/ntpd-rs/observe."""
    sock = Path("/run/ntpd-rs/observe")
    record("ntpd-rs config: the control socket is at observation-path (/var/run/ntpd-rs)",
           sock.is_socket(), sorted(str(p) for p in Path("/run/ntpd-rs").glob("*"))
           if Path("/run/ntpd-rs").is_dir() else "no /run/ntpd-rs")
    result = sh("ntpctl", "status", "--json")
    document = json.loads(result.stdout) if result.returncode == 0 else {}
    states = {p["worker_id"]: p["state"] for p in document.get("processes", [])}
    record("ntpd-rs config: ntpctl status answers, every process running",
           result.returncode == 0 and states and set(states.values()) == {"running"},
           states or (result.returncode, result.stderr[-500:]))
    plain = sh("ntpctl", "status")
    record("ntpd-rs config: ntpctl status (text) names the loopback source",
           plain.returncode == 0 and "127.0.0.1" in plain.stdout,
           plain.stdout[-1500:] or (plain.returncode, plain.stderr[-500:]))
    started = show(UNIT, "NRestarts", "MainPID")
    time.sleep(10)  # longer than the runtime watch's grace for a missing socket (6 s)
    svc = show(UNIT, "ActiveState", "NRestarts", "MainPID")
    record("ntpd-rs config: still running, never restarted (the supervisor sees the socket)",
           svc.get("ActiveState") == "active" and svc.get("NRestarts") == started["NRestarts"]
           and svc.get("MainPID") == started["MainPID"], (started, svc))
    member = sh("sh", "-c", "useradd --system --no-create-home --groups ntpd-py operator2 && "
                "runuser -u operator2 -- ntpctl status")
    record("ntpd-rs config: ntpctl status as a member of group ntpd-py",
           member.returncode == 0, member.stderr[-500:] or member.stdout[:200])


def check_journal_priorities(since: str) -> None:
    # Our lines carry <N> (SyslogLevelPrefix=yes): `journalctl -p warning` selects by level.
    # The ntpd-rs config has one source and minimum-agreeing-sources = 3: a start-up warning.
    def lines(*extra: str) -> list[str]:
        out = sh("journalctl", f"_SYSTEMD_UNIT={UNIT}", "--since", since, *extra, "-o", "cat",
                 "--no-pager").stdout
        return [line for line in out.splitlines() if line.strip()]

    warnings = wait(lambda: lines("-p", "warning"), 30)
    record("journalctl -p warning: shows the start-up warning",
           any(": WARNING: " in line and "minimum-agreeing-sources" in line
               for line in warnings or []), (warnings or [])[:5])
    record("journalctl -p warning: hides info lines",
           bool(warnings) and not any(": INFO: " in line for line in warnings or []),
           (warnings or [])[:5])
    info = lines("-p", "info")
    record("journalctl -p info: shows info lines (READY) without a <N> left in the text",
           any(": INFO: ready:" in line for line in info)
           and not any(re.match(r"^<\d>", line) for line in info), info[:5])
    fields = sh("journalctl", f"_SYSTEMD_UNIT={UNIT}", "--since", since, "-o", "json",
                "--no-pager").stdout
    priorities = {json.loads(line).get("PRIORITY") for line in fields.splitlines() if line}
    record("journal PRIORITY fields: 6 (info) and 4 (warning) both present",
           {"6", "4"} <= priorities, sorted(str(p) for p in priorities))


def check_reload_and_restart() -> None:
    before = main_pid()
    result = sh("systemctl", "reload", UNIT)
    time.sleep(2)
    svc = show(UNIT, "ActiveState", "MainPID")
    record("systemctl reload: SIGHUP, same supervisor, still active",
           result.returncode == 0 and svc["MainPID"] == str(before)
           and svc["ActiveState"] == "active" and "SIGHUP: re-reading" in journal(), svc)
    ptp = next((pid for pid, name in children_of(before).items() if name == "ntpd-py:ptp"), None)
    if ptp is None:
        record("a killed worker is restarted by the supervisor", False, "no ptp worker")
        return
    os.kill(ptp, signal.SIGKILL)
    new = wait(lambda: next((p for p, n in children_of(before).items()
                             if n == "ntpd-py:ptp" and p != ptp), None), 20)
    svc = show(UNIT, "ActiveState", "NRestarts")
    record("a killed worker is restarted by the supervisor, not the service by systemd",
           new is not None and svc == {"ActiveState": "active", "NRestarts": "0"}, svc)


def check_security() -> None:
    out = sh("systemd-analyze", "security", UNIT, "--no-pager", timeout=120).stdout
    line = next((line for line in out.splitlines() if "Overall exposure" in line), out[-300:])
    record("systemd-analyze security (live unit)", "Overall exposure" in line, line)


def check_watchdog() -> None:
    dropin = Path("/run/systemd/system/ntpd-py.service.d/test-watchdog.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nWatchdogSec=4\nTimeoutAbortSec=3\n")
    sh("systemctl", "daemon-reload")
    restart = sh("systemctl", "restart", UNIT, timeout=120)
    first = main_pid()
    restarts = int(show(UNIT, "NRestarts")["NRestarts"])
    os.kill(first, signal.SIGSTOP)  # a hung supervisor: no more WATCHDOG=1
    back = wait(lambda: main_pid() not in (0, first)
                and show(UNIT, "ActiveState")["ActiveState"] == "active", 60)
    svc = show(UNIT, "NRestarts", "ActiveState")
    text = sh("journalctl", "-u", UNIT, "--no-pager").stdout
    record("watchdog: a hung supervisor is killed and the service restarted",
           restart.returncode == 0 and bool(back) and int(svc["NRestarts"]) == restarts + 1
           and "Watchdog timeout" in text, svc)
    dropin.unlink()
    sh("systemctl", "daemon-reload")


def check_stop() -> None:
    result = sh("systemctl", "stop", UNIT, timeout=60)
    svc = show(UNIT, "ActiveState", "Result", "ExecMainStatus")
    leftovers = [n for p, n in ((p, status_of(int(p.name)).get("Name", ""))
                                for p in Path("/proc").iterdir() if p.name.isdigit())
                 if n.startswith("ntpd-py")]
    record("systemctl stop: clean exit, nothing left running",
           result.returncode == 0 and svc.get("Result") == "success"
           and svc.get("ExecMainStatus") == "0" and not leftovers, (svc, leftovers))


BOUNDING = ["CAP_SYS_TIME", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL",
            "CAP_CHOWN", "CAP_NET_BIND_SERVICE"]


def probe_capabilities() -> None:
    """Optional (ntpdpy.capsprobe=1): the service with each capability removed in turn."""
    dropin = Path("/run/systemd/system/ntpd-py.service.d/test-caps.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    for cap in BOUNDING:
        rest = " ".join(c for c in BOUNDING if c != cap)
        dropin.write_text(f"[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet={rest}\n"
                          "TimeoutStartSec=60\nRestart=no\n")
        sh("systemctl", "daemon-reload")
        since = sh("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
        start = sh("systemctl", "restart", UNIT, timeout=120)
        time.sleep(5)
        running = show(UNIT, "ActiveState", "Result", "ExecMainStatus", "StatusText")
        stop = sh("systemctl", "stop", UNIT, timeout=120)
        after = show(UNIT, "Result", "ExecMainStatus")
        lines = sh("journalctl", "-u", UNIT, "--since", since, "-o", "cat", "--no-pager").stdout
        notable = [line for line in lines.splitlines()
                   if re.search(r"ERROR|WARNING|Error|error|denied|not permitted|Traceback|"
                                r"Failed|lost |killing", line)]
        record(f"probe without {cap}", True, {"start_rc": start.returncode, "running": running,
                                               "stop_rc": stop.returncode, "after_stop": after,
                                               "log": notable[:8]})
        sh("systemctl", "reset-failed", UNIT)
    dropin.unlink()
    sh("systemctl", "daemon-reload")


def switch_to_ntpd_rs_config() -> str | None:
    """Second phase, same boot: ntpd-rs's default ntp.toml under the same shipped unit,
    with the loopback NTP server it needs (the first phase's own server held port 123).
    Returns the journal timestamp the phase starts at, or None if it could not start."""
    global PHASE
    PHASE = "ntpd-rs"
    since = sh("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    Path("/etc/ntpd-py/ntp.toml").write_text(NTPD_RS_TOML.read_text())
    sh("systemctl", "reset-failed", UNIT)
    server = sh("systemctl", "start", NTP_SERVER_UNIT, timeout=120)
    start = sh("systemctl", "start", UNIT, timeout=180)
    if not record("ntpd-rs config: the service starts on it (same boot, same unit)",
                  server.returncode == 0 and start.returncode == 0,
                  (server.returncode, start.returncode, start.stderr[-500:])):
        return None
    return since


def main() -> int:
    cmdline = Path("/proc/cmdline").read_text().split()
    run = Path(next(a.split("=", 1)[1] for a in cmdline if a.startswith("ntpdpy.run=")))
    try:
        if check_started():
            check_synchronized()
            check_processes()
            check_ntpctl()
            check_metrics()
            check_ntp_server()
            check_journal()
            check_reload_and_restart()
            check_security()
            check_watchdog()
            check_stop()
            if "ntpdpy.capsprobe=1" in cmdline:
                probe_capabilities()
        since = switch_to_ntpd_rs_config()
        if since is not None and check_started():
            check_ntpd_rs_config()
            check_journal_priorities(since)
    except Exception as exc:  # report, do not hang the guest
        record("guest check crashed", False, repr(exc))
    (run / "journal.txt").write_text(sh("journalctl", "-b", "--no-pager").stdout)
    (run / "systemd-results.json").write_text(json.dumps(RESULTS, indent=1))
    rc = 0 if RESULTS and all(r["ok"] for r in RESULTS) else 1
    (run / "rc").write_text(f"{rc}\n")
    with open("/dev/console", "w") as console:
        console.write(f"@@ntpd-py-vm end rc={rc}@@\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
