"""Inside the QEMU guest (systemd as PID 1, ntpdpy.dpkg=1): install, run, remove and purge the .deb.

Run by ntpd-py-debtest.service (tests/deploy/test_deb_guest.py writes it) with
the system's /usr/bin/python3: nothing of ntpd-py is installed when it starts.
The guest's /usr is an overlay and its dpkg database a copy, so nothing here
reaches the host. Every check is recorded as {"name", "ok", "detail"} in
<run dir>/deb-results.json; the journal goes to journal.txt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS: list[dict[str, Any]] = []
UNIT = "ntpd-py.service"
POLICY = Path("/usr/sbin/policy-rc.d")
# Observe mode: the daemon computes and reports, and steers nothing, on the guest's PHC.
OBSERVE_CONFIG = """\
[daemon]
clock = "observe"

[[source]]
mode = "ptp"
path = "/dev/ptp_igb"
precision = 1e-5

[synchronization]
minimum-agreeing-sources = 1
"""


def record(name: str, ok: bool, detail: object = "") -> bool:
    RESULTS.append({"name": name, "ok": bool(ok), "detail": str(detail)[:4000]})
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    return bool(ok)


def sh(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)


def state(prop: str = "ActiveState") -> str:
    return sh("systemctl", "show", UNIT, f"--property={prop}", "--value").stdout.strip()


def wait(predicate: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value


def supervisors() -> list[int]:
    """PIDs of any ntpd-py process left (by command line: the venv's scripts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "/usr/lib/ntpd-py/" in cmd or "ntpd-py run" in cmd:
                found.append(int(entry.name))
    return found


def check(deb: str) -> None:
    # 1. Installed where policy-rc.d forbids starting services (an image build, a container).
    POLICY.write_text("#!/bin/sh\nexit 101\n")
    POLICY.chmod(0o755)
    result = sh("dpkg", "-i", deb)
    POLICY.unlink()
    if not record("dpkg -i", result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]):
        return
    record("enabled on first install (deb-systemd-helper)",
           sh("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled",
           sh("systemctl", "is-enabled", UNIT).stdout)
    record("not started: policy-rc.d said 101", state() == "inactive", state())
    user = sh("getent", "passwd", "ntpd-py")
    record("user ntpd-py created (systemd-sysusers)", user.returncode == 0
           and user.stdout.split(":")[5:7] == ["/var/lib/ntpd-py", "/usr/sbin/nologin\n"],
           user.stdout)
    record("tmpfiles: /var/lib/ntpd-py", Path("/var/lib/ntpd-py").is_dir())
    compiled = list(Path("/usr/lib/ntpd-py/lib").rglob("ntpd_py/supervisor/__pycache__/*.pyc"))
    record("postinst byte-compiled the virtualenv", bool(compiled), len(compiled))
    for page, section in (("ntpd-py", "8"), ("ntpctl", "8"), ("ntp.toml", "5")):
        path = Path(f"/usr/share/man/man{section}/{page}.{section}.gz")
        found = sh("man", "-w", section, page)
        record(f"man page {page}({section})", path.is_file()
               and found.stdout.strip() == str(path), found.stdout + found.stderr)
    default = Path("/etc/ntpd-py/ntp.toml").read_text()
    record("conffile /etc/ntpd-py/ntp.toml: install.sh's default", "pool.ntp.org" in default,
           default[:300])
    valid = sh("ntpd-py", "validate", "-c", "/etc/ntpd-py/ntp.toml", timeout=60)
    record("/usr/sbin/ntpd-py validate", valid.returncode == 0, valid.stdout + valid.stderr)

    # 2. The admin configures observe mode and starts it.
    Path("/etc/ntpd-py/ntp.toml").write_text(OBSERVE_CONFIG)
    sh("systemctl", "start", UNIT, timeout=120)
    active = wait(lambda: state() == "active", 90)
    record("systemctl is-active after start (observe mode)", active
           and sh("systemctl", "is-active", UNIT).stdout.strip() == "active",
           sh("systemctl", "status", "--no-pager", UNIT).stdout[-2000:])
    status = wait(lambda: (r := sh("ntpctl", "status", timeout=30)).returncode == 0 and r, 30)
    record("/usr/bin/ntpctl status answers", bool(status),
           status.stdout[:1500] if status else sh("ntpctl", "status").stderr)
    if status:
        record("ntpctl status shows observe mode", "(observe backend)" in status.stdout, status.stdout[:800])

    # 3. Removal: stopped, files gone, configuration kept.
    result = sh("dpkg", "-r", "ntpd-py")
    record("dpkg -r", result.returncode == 0, result.stdout[-1000:] + result.stderr[-1000:])
    record("after dpkg -r: the unit is not running", state() in ("inactive", ""), state())
    left = wait(lambda: not supervisors(), 20) and supervisors()
    record("after dpkg -r: no ntpd-py process left", not left, left)
    record("after dpkg -r: commands and unit file gone",
           not any(Path(p).exists() for p in ("/usr/sbin/ntpd-py", "/usr/bin/ntpctl",
                                               "/usr/lib/systemd/system/ntpd-py.service",
                                               "/usr/lib/ntpd-py")))
    record("after dpkg -r: the configuration stays (conffile)",
           Path("/etc/ntpd-py/ntp.toml").read_text() == OBSERVE_CONFIG)

    # 4. Purge: configuration and state gone too.
    result = sh("dpkg", "-P", "ntpd-py")
    record("dpkg -P", result.returncode == 0, result.stdout[-1000:] + result.stderr[-1000:])
    gone = [p for p in ("/etc/ntpd-py", "/var/lib/ntpd-py") if Path(p).exists()]
    record("after dpkg -P: /etc/ntpd-py and /var/lib/ntpd-py removed", not gone, gone)
    sh("systemctl", "daemon-reload")
    load = state("LoadState")
    record("after dpkg -P: systemd knows no ntpd-py.service", load == "not-found"
           and state() == "inactive", f"LoadState={load} ActiveState={state()}")
    record("after dpkg -P: dpkg forgot the package",
           sh("dpkg-query", "-W", "ntpd-py").returncode != 0)


def main() -> int:
    cmdline = Path("/proc/cmdline").read_text().split()
    run = Path(next(a.split("=", 1)[1] for a in cmdline if a.startswith("ntpdpy.run=")))
    deb = next(a.split("=", 1)[1] for a in cmdline if a.startswith("ntpdpy.deb="))
    try:
        check(deb)
    except Exception as exc:  # report, do not hang the guest
        record("guest check crashed", False, repr(exc))
    (run / "journal.txt").write_text(sh("journalctl", "-b", "--no-pager").stdout)
    (run / "deb-results.json").write_text(json.dumps(RESULTS, indent=1))
    rc = 0 if RESULTS and all(r["ok"] for r in RESULTS) else 1
    (run / "rc").write_text(f"{rc}\n")
    with open("/dev/console", "w") as console:
        console.write(f"@@ntpd-py-vm end rc={rc}@@\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
