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


@pytest.fixture(scope="module")
def guest_results(staged: Path) -> list[dict[str, object]]:
    if os.environ.get("NTPDPY_IN_VM") == "1":
        pytest.skip("already inside the guest")
    stage = Path(tempfile.mkdtemp(prefix="systemd-", dir=CACHE))
    try:
        shutil.copytree(staged, stage / "root", symlinks=True)
        (stage / "root/etc/ntpd-py/ntp.toml").write_text(CONFIG)
        (stage / "udev").mkdir()
        (stage / "udev/50-ntpd-py-test.rules").write_text(TEST_UDEV_RULE)
        # The shipped example rule, applied for real (group ntpd-py may read PHCs).
        shutil.copy(staged / "opt/ntpd-py/share/udev/60-ntpd-py-phc.rules", stage / "udev")
        (stage / "units").mkdir()
        for name, text in UNITS.items():
            check = REPO / "tests/deploy/guest_check.py"
            (stage / "units" / name).write_text(text.format(check=check))
        try:
            # NTPDPY_CAPS_PROBE=1: also run the service with each capability of its
            # bounding set removed in turn (slow; how the set was chosen, README).
            probe = " ntpdpy.capsprobe=1" if os.environ.get("NTPDPY_CAPS_PROBE") == "1" else ""
            result = run_in_guest("true", timeout_s=1800 if probe else 900, memory_mb=1536,
                                  kernel_args=f"ntpdpy.systemd={stage} {KERNEL_ARGS}{probe}")
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


def test_every_check_in_the_guest_passed(guest_results: list[dict[str, object]]) -> None:
    failed = [f"{r['name']}: {r['detail']}" for r in guest_results if not r["ok"]]
    names = [str(r["name"]) for r in guest_results]
    assert not failed, "\n".join(failed)
    for expected in ("service active", "STATUS=", "watchdog: a hung supervisor",
                     "systemctl stop", "ntpctl status as another user", "metrics:"):
        assert any(n.startswith(expected) for n in names), f"check {expected!r} did not run"
    for result in guest_results:
        if str(result["name"]).startswith(("systemd-analyze", "probe without")):
            print(result["name"], result["detail"])
