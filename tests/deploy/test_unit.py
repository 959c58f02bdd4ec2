"""The shipped systemd unit: `systemd-analyze verify` and `security` (offline), against chrony's.

Run on the staged install (its ExecStart exists only there), with /opt/ntpd-py
bind-mounted from DESTDIR in a private mount namespace: the host is untouched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.integration

UNIT = "usr/local/lib/systemd/system/ntpd-py.service"
CHRONY = Path("/lib/systemd/system/chrony.service")
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+) (\w+)")
GOOD_LEVELS = {"PERFECT", "SAFE", "OK"}


def _in_namespace(staged: Path, command: str) -> subprocess.CompletedProcess[str]:
    script = (f"mount -t tmpfs opt /opt && mkdir /opt/ntpd-py && "
              f"mount --bind {staged}/opt/ntpd-py /opt/ntpd-py && {command}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def exposure(unit_file: Path) -> tuple[float, str, str]:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_file)],
                            capture_output=True, text=True, timeout=120)
    match = EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(2)), match.group(3), match.group(0)


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="needs systemd-analyze (systemd >= 252)")


@needs_analyze
def test_systemd_analyze_verify_passes(staged: Path) -> None:
    result = _in_namespace(staged, f"systemd-analyze verify {staged / UNIT}")
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


@needs_analyze
def test_exposure_is_ok_and_lower_than_chronys(staged: Path) -> None:
    ours, level, line = exposure(staged / UNIT)
    print(line)
    assert level in GOOD_LEVELS, line
    if not CHRONY.exists():
        pytest.skip(f"{CHRONY} not installed (Debian chrony) to compare with; ours: {line}")
    theirs, _, their_line = exposure(CHRONY)
    print(their_line)
    assert ours < theirs, f"{line} / {their_line}"


def test_unit_and_deploy_files_agree() -> None:
    from ntpd_py.core.config import DaemonConfig

    unit = (REPO / "deploy/systemd/ntpd-py.service").read_text()
    tmpfiles = (REPO / "deploy/tmpfiles.d/ntpd-py.conf").read_text()
    sysusers = (REPO / "deploy/sysusers.d/ntpd-py.conf").read_text()
    # The writable paths of the sandbox are the directories tmpfiles.d creates.
    writable = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert writable is not None
    entries = [line.split() for line in tmpfiles.splitlines() if line.startswith("d ")]
    # The root-owned bus/ directory (per-worker endpoints) lies inside the runtime directory.
    bus = [e for e in entries if e[1] == f"{DaemonConfig().runtime_dir}/bus"]
    assert len(bus) == 1 and bus[0][2:5] == ["0711", "root", "root"], bus
    entries = [e for e in entries if e not in bus]
    created = {e[1] for e in entries}
    assert set(writable.group(1).split()) == created
    # They belong to the user sysusers.d creates, which is the config's default.
    owners = {tuple(e[3:5]) for e in entries}
    assert owners == {(DaemonConfig().user, DaemonConfig().group)}
    assert f"u {DaemonConfig().user} " in sysusers and f"g {DaemonConfig().group} " in sysusers
    # /run/ntpd-rs: the directory of ntpd-rs's default observation-path, so that its
    # ntp.toml copied as is starts under this unit (0751, as the supervisor would make it).
    assert {DaemonConfig().runtime_dir, DaemonConfig().state_dir, "/run/ntpd-rs"} == created
    assert next(e for e in entries if e[1] == "/run/ntpd-rs")[:3] == ["d", "/run/ntpd-rs", "0751"]
    for conflict in ("chrony.service", "systemd-timesyncd.service", "ntp.service",
                     "ntpsec.service", "ntpd-rs.service"):
        assert conflict in unit
