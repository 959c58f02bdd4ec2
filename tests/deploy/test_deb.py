"""The Debian package: the lock file it installs from, its build, its control data and files.

The lock-file and maintainer-script checks read the repository only. The rest
build the package once with deploy/build-deb.sh (about a minute: the locked
wheels come from pip's cache) and inspect it with dpkg-deb and lintian; it is
installed for real only in the systemd guest (test_deb_guest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import BUILD_DEB, REPO, has_manpage_generator, pip_cache

LOCK = REPO / "deploy" / "requirements.lock"
DEBIAN = REPO / "deploy" / "debian"
VENV = "usr/lib/ntpd-py"
REQ_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*\\?$")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of every requirement in the lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in LOCK.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            current = None
            continue
        if line.startswith("--hash="):
            assert current is not None, f"hash outside a requirement: {raw!r}"
            match = HASH.fullmatch(line.rstrip(" \\"))
            assert match, f"not a sha256 hash: {raw!r}"
            pins[current][1].append(match.group(1))
            continue
        match = REQ_LINE.match(line)
        assert match, f"not an exact pin (name==version): {raw!r}"
        current = canonicalize_name(match.group(1))
        pins[current] = (match.group(2), [])
    return pins


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    pins = locked()
    assert pins, "empty lock file"
    for name, (_version, hashes) in pins.items():
        assert hashes, f"{name} has no --hash: pip --require-hashes would refuse the lock"


def test_the_lock_satisfies_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = locked()
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in {LOCK.name}: run deploy/lock.sh"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name][0]}, pyproject wants {req}: run deploy/lock.sh")


def test_install_sh_installs_only_from_the_lock() -> None:
    text = (REPO / "deploy/install.sh").read_text()
    assert 'LOCK=$REPO/deploy/requirements.lock' in text
    installs = [line for line in text.splitlines()
                if re.search(r"pip.*\b(install|wheel)\b", line) and not line.lstrip().startswith("#")]
    assert installs, "install.sh runs no pip install"
    for line in installs:
        # Either exactly the locked files, or nothing from any index at all.
        assert ("--require-hashes" in line and '-r "$LOCK"' in line) or "--no-index" in line, line


def test_maintainer_scripts() -> None:
    for name in ("postinst", "prerm", "postrm"):
        script = DEBIAN / name
        assert os.access(script, os.X_OK), f"{name} is not executable"
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
        assert "set -e" in script.read_text()
    postinst = (DEBIAN / "postinst").read_text()
    # Started through deb-systemd-invoke (policy-rc.d, disabled units), never systemctl start.
    assert "deb-systemd-invoke" in postinst and "systemctl start" not in postinst
    assert "deb-systemd-helper --quiet was-enabled" in postinst
    assert "systemd-sysusers ntpd-py.conf" in postinst
    postrm = (DEBIAN / "postrm").read_text()
    assert "purge)" in postrm and "rm -rf /etc/ntpd-py /var/lib/ntpd-py" in postrm
    assert (DEBIAN / "conffiles").read_text().split() == ["/etc/ntpd-py/ntp.toml"]


@pytest.mark.skipif(has_manpage_generator(), reason="the man page generator exists here")
def test_the_build_refuses_without_man_pages(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs dpkg-deb and /usr/bin/python3")
    env = {**os.environ, "PIP_CACHE_DIR": str(pip_cache())}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", str(BUILD_DEB), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert "ntpd_py.supervisor.manpages is missing" in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def test_control_fields(built_deb: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()
    pyver = subprocess.run(["/usr/bin/python3", "-c",
                            "import sys; print('%d.%d' % sys.version_info[:2])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert _field(built_deb, "Package") == "ntpd-py"
    assert _field(built_deb, "Version") == f"{version}-1"
    assert _field(built_deb, "Architecture") == arch
    assert built_deb.name == f"ntpd-py_{version}-1_{arch}.deb"
    depends = [d.strip() for d in _field(built_deb, "Depends").split(",")]
    assert f"python{pyver}" in depends  # the virtualenv's lib/python3.X is tied to it
    assert "libseccomp2" in depends and any(d.startswith("init-system-helpers") for d in depends)
    assert int(_field(built_deb, "Installed-Size")) > 1000
    assert re.fullmatch(r".+ <[^<>@\s]+@[^<>@\s]+>", _field(built_deb, "Maintainer"))
    description = _field(built_deb, "Description").splitlines()
    assert len(description) > 2 and len(description[0]) < 80


def test_contents(built_deb: Path, tmp_path: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(built_deb)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    entries: dict[str, str] = {}
    for line in listing.splitlines():
        path = line.split(None, 5)[5]
        target = ""
        if " -> " in path:
            path, target = path.split(" -> ", 1)
        entries[path.removeprefix("./").rstrip("/")] = target
    for expected in ("etc/ntpd-py/ntp.toml", "usr/lib/systemd/system/ntpd-py.service",
                     "usr/lib/sysusers.d/ntpd-py.conf", "usr/lib/tmpfiles.d/ntpd-py.conf",
                     "usr/share/man/man8/ntpd-py.8.gz", "usr/share/man/man8/ntpctl.8.gz",
                     "usr/share/man/man5/ntp.toml.5.gz", "usr/share/doc/ntpd-py/copyright",
                     f"{VENV}/bin/ntpd-py", f"{VENV}/bin/ntpctl", f"{VENV}/pyvenv.cfg",
                     f"{VENV}/share/udev/60-ntpd-py-phc.rules"):
        assert expected in entries, f"{expected} is not in the package"
    assert entries["usr/sbin/ntpd-py"] == "../lib/ntpd-py/bin/ntpd-py"
    assert entries["usr/bin/ntpctl"] == "../lib/ntpd-py/bin/ntpctl"
    site = f"{VENV}/lib/python3."
    for package in ("ntpd_py", "zmq", "pydantic", "msgpack", "psutil", "pyseccomp"):
        assert any(p.startswith(site) and re.search(rf"/site-packages/{package}(/|\.py$)", p)
                   for p in entries), package
    for path in entries:
        assert not path.startswith(("opt", "usr/local")), path  # Debian's places only
        assert "__pycache__" not in path and not path.endswith(".pyc"), path  # postinst compiles
        assert "/site-packages/pip/" not in path and "/site-packages/setuptools/" not in path, path

    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(tmp_path)], check=True, timeout=120)
    # The default configuration is install.sh's, and the unit is the repository's with
    # the virtualenv's path.
    assert (tmp_path / "etc/ntpd-py/ntp.toml").read_text() == (
        REPO / "deploy/examples/ntp.toml").read_text()
    unit = (tmp_path / "usr/lib/systemd/system/ntpd-py.service").read_text()
    assert unit == (REPO / "deploy/systemd/ntpd-py.service").read_text().replace(
        "/opt/ntpd-py", "/usr/lib/ntpd-py")
    assert "ExecStart=/usr/lib/ntpd-py/bin/ntpd-py run -c /etc/ntpd-py/ntp.toml" in unit
    cfg = (tmp_path / VENV / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg and str(tmp_path) not in cfg
    assert (tmp_path / VENV / "bin/ntpd-py").read_text().startswith(f"#!/{VENV}/bin/python\n")


def test_lintian_reports_only_documented_tags(built_deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("needs lintian (apt install lintian)")
    readme = (REPO / "deploy/README-deb.md").read_text()
    section = readme.split("## lintian", 1)[1]
    documented = set(re.findall(r"^- `([a-z0-9-]+)`|, `([a-z0-9-]+)`", section, re.M))
    allowed = {name for pair in documented for name in pair if name}
    result = subprocess.run(["lintian", "--tag-display-limit", "0", str(built_deb)],
                            capture_output=True, text=True, timeout=600)
    tags = set(re.findall(r"^[EW]: ntpd-py: ([a-z0-9-]+)", result.stdout, re.M))
    assert tags <= allowed, f"lintian tags not explained in deploy/README-deb.md: {tags - allowed}"
