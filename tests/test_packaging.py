"""Installed, the project is one import package `ntpd_py` with the two console scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_install_has_no_top_level_collisions(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    top = {p.name for p in target.iterdir()}
    assert "ntpd_py" in top
    for name in ("core", "ipc", "workers", "supervisor", "tests", "deploy"):
        assert name not in top, f"top-level {name!r} installed into site-packages"
    installed = {p.name for p in (target / "ntpd_py").iterdir()}
    assert {"core", "ipc", "workers", "supervisor"} <= installed
    scripts = (target / "bin").iterdir() if (target / "bin").exists() else []
    assert {"ntpd-py", "ntpctl"} <= {p.name for p in scripts}
