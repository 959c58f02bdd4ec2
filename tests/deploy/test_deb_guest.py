"""The .deb for real: dpkg -i, start, ntpctl, dpkg -r and -P in the systemd QEMU guest.

The guest (tests/vm/init.sh, `ntpdpy.systemd=` with `ntpdpy.dpkg=1`) boots this
machine's systemd with a copy of its dpkg database and its /usr under a tmpfs
overlay, so the package is installed by dpkg exactly as on a Debian 12 system
and vanishes at power-off. tests/deploy/deb_guest_check.py does the checks
inside; this test reports them. Nothing is installed on the host.
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
from .test_systemd_guest import KERNEL_ARGS, TEST_UDEV_RULE

pytestmark = [pytest.mark.integration, pytest.mark.systemd_vm]

UNITS = {
    "ntpd-py-vmtest.target": """\
[Unit]
Description=ntpd-py: Debian package test run
Requires=ntpd-py-vmtest.service
After=ntpd-py-vmtest.service
""",
    "ntpd-py-vmtest.service": """\
[Unit]
Description=ntpd-py: install, run and remove the .deb
After=systemd-udev-settle.service systemd-sysusers.service systemd-tmpfiles-setup.service
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {check}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
""",
}


@pytest.fixture(scope="module")
def deb_results(built_deb: Path) -> list[dict[str, object]]:
    if os.environ.get("NTPDPY_IN_VM") == "1":
        pytest.skip("already inside the guest")
    stage = Path(tempfile.mkdtemp(prefix="deb-guest-", dir=CACHE))
    try:
        (stage / "root/etc").mkdir(parents=True)  # nothing staged: dpkg installs it all
        (stage / "udev").mkdir()
        (stage / "udev/50-ntpd-py-test.rules").write_text(TEST_UDEV_RULE)
        (stage / "units").mkdir()
        for name, text in UNITS.items():
            (stage / "units" / name).write_text(
                text.format(check=REPO / "tests/deploy/deb_guest_check.py"))
        try:
            result = run_in_guest(
                "true", timeout_s=900, memory_mb=1536,
                kernel_args=f"ntpdpy.systemd={stage} ntpdpy.dpkg=1 ntpdpy.deb={built_deb} "
                            f"{KERNEL_ARGS}")
        except HarnessUnavailable as exc:
            pytest.skip(str(exc))
        results_file = result.run_dir / "deb-results.json"
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


def test_the_package_installs_runs_and_purges(deb_results: list[dict[str, object]]) -> None:
    failed = [f"{r['name']}: {r['detail']}" for r in deb_results if not r["ok"]]
    names = [str(r["name"]) for r in deb_results]
    assert not failed, "\n".join(failed)
    for expected in ("dpkg -i", "not started: policy-rc.d", "systemctl is-active after start",
                     "/usr/bin/ntpctl status answers", "man page ntpd-py(8)", "dpkg -r",
                     "after dpkg -r: the unit is not running", "dpkg -P",
                     "after dpkg -P: /etc/ntpd-py"):
        assert any(n.startswith(expected) for n in names), f"check {expected!r} did not run"
