"""deploy/install.sh into a throwaway DESTDIR: what it installs, upgrade, uninstall.

Never against the running system: every run is confined to its DESTDIR (see
conftest.py) and, with DESTDIR set, install.sh asks no service manager anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import CACHE, REPO, install

pytestmark = pytest.mark.integration

VENV = "opt/ntpd-py"
EXPECTED = {
    "usr/local/bin/ntpd-py", "usr/local/bin/ntpctl",
    "usr/local/lib/systemd/system/ntpd-py.service",
    "usr/local/lib/sysusers.d/ntpd-py.conf", "usr/local/lib/tmpfiles.d/ntpd-py.conf",
    "etc/ntpd-py/ntp.toml",
    f"{VENV}/share/udev/60-ntpd-py-phc.rules", f"{VENV}/share/logrotate/ntpd-py",
    f"{VENV}/share/examples/ntp.toml", f"{VENV}/share/README.md",
    f"{VENV}/share/doc/architecture.md",
    "usr/local/share/man/man8/ntpd-py.8", "usr/local/share/man/man8/ntpctl.8",
    "usr/local/share/man/man5/ntp.toml.5",
}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_installs_everything_under_destdir(staged: Path) -> None:
    assert _files(staged) >= EXPECTED
    top = {p.name for p in staged.iterdir()}
    assert top == {"etc", "opt", "usr"}
    for cmd in ("ntpd-py", "ntpctl"):
        link = staged / "usr/local/bin" / cmd
        assert link.is_symlink() and os.readlink(link) == f"/{VENV}/bin/{cmd}"
        script = staged / VENV / "bin" / cmd
        assert script.read_text().splitlines()[0] == f"#!/{VENV}/bin/python"
    cfg = (staged / VENV / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg and str(staged) not in cfg
    # No file of the virtualenv remembers the staging path (scripts, byte code).
    leaks = subprocess.run(["grep", "-rl", "--", str(staged), str(staged / VENV)],
                           capture_output=True, text=True, timeout=120).stdout.split()
    assert leaks == []
    unit = (staged / "usr/local/lib/systemd/system/ntpd-py.service").read_text()
    assert unit == (REPO / "deploy/systemd/ntpd-py.service").read_text()
    assert (staged / "etc/ntpd-py/ntp.toml").read_text() == (
        REPO / "deploy/examples/ntp.toml").read_text()


def test_the_installed_commands_run(staged: Path) -> None:
    python = staged / VENV / "bin" / "python"  # the staged venv runs in place as well
    code = "import sys; from ntpd_py.supervisor.cli import main; sys.argv[0] = 'ntpd-py'; main()"
    result = subprocess.run(
        [str(python), "-c", code, "validate", "-c", str(staged / "etc/ntpd-py/ntp.toml")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "configuration OK" in result.stdout, result.stderr


def test_reinstall_keeps_the_configuration_and_uninstall_removes_the_rest(staged: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="deploy-again-", dir=CACHE))
    try:
        copy = work / "root"
        shutil.copytree(staged, copy, symlinks=True)
        config = copy / "etc/ntpd-py/ntp.toml"
        config.write_text("# mine\n")
        result = install(copy)  # an upgrade in place
        assert config.read_text() == "# mine\n"
        assert "keeping the existing /etc/ntpd-py/ntp.toml" in result.stdout
        assert _files(copy) >= EXPECTED
        install(copy, "--uninstall")
        assert _files(copy) == {"etc/ntpd-py/ntp.toml"}  # the admin's configuration stays
        assert config.read_text() == "# mine\n"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_uninstall_leaves_foreign_files_alone(staged: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="deploy-foreign-", dir=CACHE))
    try:
        copy = work / "root"
        shutil.copytree(staged, copy, symlinks=True)
        (copy / "usr/local/bin/ntpctl").unlink()
        (copy / "usr/local/bin/ntpctl").symlink_to("/usr/bin/true")  # someone else's now
        (copy / "usr/local/bin/other").write_text("not ours\n")
        install(copy, "--uninstall")
        left = _files(copy)
        assert {"usr/local/bin/ntpctl", "usr/local/bin/other", "etc/ntpd-py/ntp.toml"} == left
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_destdir_must_be_absolute() -> None:
    result = subprocess.run(["bash", str(REPO / "deploy/install.sh")],
                            env={**os.environ, "DESTDIR": "relative/dir"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "DESTDIR must be an absolute path" in result.stderr
