"""A staged install (deploy/install.sh into a DESTDIR), made once per session.

install.sh runs in a private mount namespace in which every file system is
read-only except DESTDIR's parent, a scratch TMPDIR and pip's download cache:
writing anywhere else fails with EROFS and fails the install, so "everything
lands under DESTDIR" is enforced by the kernel, not inferred afterwards. The
staging directory lives under tests/vm/.cache so that the QEMU guest (which
sees the host's files, but with its own /tmp) can boot from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
INSTALL = REPO / "deploy" / "install.sh"
CACHE = REPO / "tests" / "vm" / ".cache"

# Every mount read-only, then the given directories writable again (bind + remount).
READ_ONLY_NS = r"""
set -eu
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
    case "$m" in /proc*|/sys*|/dev*) continue ;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
while [ "$1" != -- ]; do
    mount --bind "$1" "$1"
    mount -o remount,bind,rw "$1"
    shift
done
shift
exec "$@"
"""


def can_sandbox() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def run_read_only(writable: list[Path], argv: list[str], env: dict[str, str],
                  timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run argv with the whole file system read-only except `writable`."""
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_NS, "sh",
           *map(str, writable), "--", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def pip_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(os.environ.get("PIP_CACHE_DIR", os.path.join(base, "pip")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh [args] with DESTDIR, sandboxed; asserts success."""
    scratch = Path(tempfile.mkdtemp(prefix="ntpd-py-install-"))
    try:
        env = {**os.environ, "DESTDIR": str(destdir), "TMPDIR": str(scratch),
               "PIP_CACHE_DIR": str(pip_cache())}
        env.pop("PYTHONPATH", None)
        result = run_read_only([destdir.parent, scratch, pip_cache()],
                               ["bash", str(INSTALL), *args], env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.returncode == 0, f"install.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def staged() -> Iterator[Path]:
    """DESTDIR of a fresh install (read-only for tests: copy it to change it)."""
    if not can_sandbox():
        pytest.skip("needs root and unshare to confine install.sh to its DESTDIR")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 (Debian python3-venv)")
    CACHE.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="deploy-", dir=CACHE))
    try:
        destdir = stage / "root"
        destdir.mkdir()
        install(destdir)
        yield destdir
    finally:
        shutil.rmtree(stage, ignore_errors=True)


BUILD_DEB = REPO / "deploy" / "build-deb.sh"


def has_manpage_generator() -> bool:
    return (REPO / "supervisor" / "manpages.py").exists()


@pytest.fixture(scope="session")
def built_deb() -> Iterator[Path]:
    """The .deb from deploy/build-deb.sh, built once (under tests/vm/.cache: the guest sees it)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 (Debian python3-venv)")
    if not has_manpage_generator():
        pytest.skip("no man page generator (supervisor/manpages.py) on this branch: "
                    "build-deb.sh refuses to build without the man pages")
    CACHE.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="deb-", dir=CACHE))
    try:
        env = {**os.environ, "PIP_CACHE_DIR": str(pip_cache())}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(["bash", str(BUILD_DEB), str(out)], env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"build-deb.sh failed:\n{result.stdout}\n{result.stderr}"
        debs = list(out.glob("ntpd-py_*.deb"))
        assert len(debs) == 1, f"expected one .deb in {out}, found {debs}"
        yield debs[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)
