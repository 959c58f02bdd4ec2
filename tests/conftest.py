"""Shared pytest fixtures and guards for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ntpd_py.plumbing.clock_guard import FORBID_ENV


def _inside_test_vm() -> bool:
    # The QEMU guest of tests/vm boots with this marker on its kernel command line;
    # there, and only there, the system clock backend may run (the guest's clock is its own).
    try:
        with open("/proc/cmdline") as handle:
            return any(word.startswith("ntpdpy.run=") for word in handle.read().split())
    except OSError:
        return False


# On a host the system clock backend must be unreachable from every test and every
# daemon a test starts (they inherit the environment); CAP_SYS_TIME is dropped too.
if not _inside_test_vm():
    os.environ[FORBID_ENV] = "1"

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "deploy" / "examples"


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a configuration text to a file and return its path."""

    def _write(text: str, name: str = "ntp.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write

# Tests marked @pytest.mark.vm run inside the QEMU guest, one boot for the whole batch.
pytest_plugins = ["tests.vm.pytest_plugin"]

