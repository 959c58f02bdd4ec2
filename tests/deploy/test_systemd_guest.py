"""The installed service for real: systemd as PID 1 in the QEMU guest, on the staged install.

The guest (tests/vm/init.sh, `ntpdpy.systemd=` mode) boots this machine's
systemd with the DESTDIR from deploy/install.sh laid over /opt, /usr/local
and /etc, creates the ntpd-py user as install.sh does on a live system, and
starts ntpd-py.service exactly as shipped: Type=notify, the watchdog, the
sandbox (ProtectSystem=strict, DevicePolicy, the capability bounding set, the
system call filter), the igb PHC as /dev/ptp0 and the guest's own clock
steered by clock-control. tests/deploy/guest_check.py checks it from inside
and writes one result per check; this test reports them. Nothing here runs
systemd or systemctl on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.vm.harness import CACHE, HarnessUnavailable, run_in_guest

from .conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.systemd_vm]

CONFIG = """\
# the guest's test configuration: its igb PHC, its own clock (clock = "system")
[[source]]
mode = "ptp"
path = "/dev/ptp_igb"  # udev: the igb PHC (ptp0 or ptp1, whichever driver loads first)
precision = 1e-5

[synchronization]
minimum-agreeing-sources = 1

[[server]]
listen = "127.0.0.1:123"

[observability]
metrics-exporter-listen = "127.0.0.1:9975"
"""

UNITS = {
    "ntpd-py-vmtest.target": """\
[Unit]
Description=ntpd-py: systemd test run
Requires=ntpd-py-vmtest.service
After=ntpd-py-vmtest.service
""",
    "ntpd-py-vmtest-setup.service": """\
[Unit]
Description=ntpd-py: what install.sh does on a live system (create the user)
Before=ntpd-py.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemd-sysusers ntpd-py.conf
""",
    "ntpd-py-vmtest.service": """\
[Unit]
Description=ntpd-py: checks against the running service
Requires=ntpd-py-vmtest-setup.service
Wants=ntpd-py.service
After=ntpd-py.service ntpd-py-vmtest-setup.service
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/opt/ntpd-py/bin/python {check}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
""",
}
# The igb NIC's PHC ticks right; the e1000e's does not (tests/vm/harness.py). Which
# becomes /dev/ptp0 depends on the order udev loads the drivers: name it.
TEST_UDEV_RULE = 'SUBSYSTEM=="ptp", DRIVERS=="igb", SYMLINK+="ptp_igb"\n'

# Boot only what the test needs: host units that are slow or irrelevant in a guest are masked.
KERNEL_ARGS = " ".join([
    "systemd.unit=ntpd-py-vmtest.target", "fstab=no", "systemd.show_status=false",
    *(f"systemd.mask={unit}" for unit in (
        "apparmor.service", "systemd-hwdb-update.service", "ldconfig.service",
        "systemd-journal-catalog-update.service", "systemd-pstore.service",
        "e2scrub_reap.service", "systemd-firstboot.service", "systemd-repart.service")),
])


# ntpd-rs's own default ntp.toml (its repository's ntp.toml) copied as is, except that its
# pool source is replaced by a loopback NTP server in the guest (no network there).
NTPD_RS_CONFIG = """\
[observability]
# Other values include trace, debug, warn and error
log-level = "info"
observation-path = "/var/run/ntpd-rs/observe"

# the pool source of ntpd-rs's file, replaced by ntpd-py-vmtest-ntpserver.service
[[source]]
mode = "server"
address = "127.0.0.1"

[synchronization]
single-step-panic-threshold = 1800
startup-step-panic-threshold = { forward="inf", backward = 1800 }
#accumulated-step-panic-threshold = 1800
#minimum-agreeing-sources = 3
"""
NTP_SERVER_UNIT = """\
[Unit]
Description=ntpd-py: a loopback NTP server for the ntpd-rs configuration test
[Service]
ExecStart=/opt/ntpd-py/bin/python -m ntpd_py.workers.ntp_serve --listen 127.0.0.1:123 \
    --synchronized --stratum 2
"""


def _boot(staged: Path, config: str, units: dict[str, str], kernel_args: str,
          timeout_s: float = 900) -> list[dict[str, object]]:
    """Boot the guest with `config` as /etc/ntpd-py/ntp.toml; the checks' results."""
    if os.environ.get("NTPDPY_IN_VM") == "1":
        pytest.skip("already inside the guest")
    stage = Path(tempfile.mkdtemp(prefix="systemd-", dir=CACHE))
    try:
        shutil.copytree(staged, stage / "root", symlinks=True)
        (stage / "root/etc/ntpd-py/ntp.toml").write_text(config)
        # The second phase's configuration (tests/deploy/guest_check.py switches to it).
        (stage / "root/etc/ntpd-py/ntpd-rs-default.toml").write_text(NTPD_RS_CONFIG)
        (stage / "udev").mkdir()
        (stage / "udev/50-ntpd-py-test.rules").write_text(TEST_UDEV_RULE)
        # The shipped example rule, applied for real (group ntpd-py may read PHCs).
        shutil.copy(staged / "opt/ntpd-py/share/udev/60-ntpd-py-phc.rules", stage / "udev")
        (stage / "units").mkdir()
        for name, text in units.items():
            check = REPO / "tests/deploy/guest_check.py"
            (stage / "units" / name).write_text(text.format(check=check))
        try:
            result = run_in_guest("true", timeout_s=timeout_s, memory_mb=1536,
                                  kernel_args=f"ntpdpy.systemd={stage} {kernel_args}")
        except HarnessUnavailable as exc:
            pytest.skip(str(exc))
        results_file = result.run_dir / "systemd-results.json"
        if not results_file.exists():
            pytest.fail(f"the guest reported nothing (rc {result.returncode}, "
                        f"{'; '.join(result.notes)}); console:\n{result.console[-6000:]}")
        results: list[dict[str, object]] = json.loads(results_file.read_text())
        journal = result.run_dir / "journal.txt"
        if not all(r["ok"] for r in results) and journal.exists():
            print(journal.read_text()[-20000:])
        return results
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@pytest.fixture(scope="module")
def guest_results(staged: Path) -> list[dict[str, object]]:
    # One boot, two phases (the shipped test configuration, then ntpd-rs's default one).
    # NTPDPY_CAPS_PROBE=1: also run the service with each capability of its
    # bounding set removed in turn (slow; how the set was chosen, README).
    probe = " ntpdpy.capsprobe=1" if os.environ.get("NTPDPY_CAPS_PROBE") == "1" else ""
    units = dict(UNITS)
    units["ntpd-py-vmtest-ntpserver.service"] = NTP_SERVER_UNIT
    return _boot(staged, CONFIG, units, KERNEL_ARGS + probe, 1800 if probe else 900)


def _phase(results: list[dict[str, object]], phase: str) -> list[dict[str, object]]:
    return [r for r in results if r.get("phase") == phase]


def test_ntpd_rs_default_config_runs_under_the_shipped_unit(
    guest_results: list[dict[str, object]],
) -> None:
    """ntpd-rs's ntp.toml, observation-path included, starts under ProtectSystem=strict;
    `journalctl -p warning` shows ntpd-py's warnings and hides its info lines."""
    ntpd_rs_results = _phase(guest_results, "ntpd-rs")
    failed = [f"{r['name']}: {r['detail']}" for r in ntpd_rs_results if not r["ok"]]
    names = [str(r["name"]) for r in ntpd_rs_results]
    assert not failed, "\n".join(failed)
    for expected in ("service active", "ntpd-rs config: the control socket",
                     "ntpd-rs config: ntpctl status answers", "journalctl -p warning: shows",
                     "journalctl -p warning: hides", "journal PRIORITY fields"):
        assert any(n.startswith(expected) for n in names), f"check {expected!r} did not run"


def test_every_check_in_the_guest_passed(guest_results: list[dict[str, object]]) -> None:
    shipped = _phase(guest_results, "shipped")
    failed = [f"{r['name']}: {r['detail']}" for r in shipped if not r["ok"]]
    names = [str(r["name"]) for r in shipped]
    assert not failed, "\n".join(failed)
    for expected in ("service active", "STATUS=", "watchdog: a hung supervisor",
                     "systemctl stop", "ntpctl status as another user", "metrics:"):
        assert any(n.startswith(expected) for n in names), f"check {expected!r} did not run"
    for result in shipped:
        if str(result["name"]).startswith(("systemd-analyze", "probe without")):
            print(result["name"], result["detail"])
