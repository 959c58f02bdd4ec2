"""The guest harness itself: the batch really runs inside a QEMU guest with kernel PHCs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def test_runs_in_the_guest_kernel_with_phcs() -> None:
    assert os.environ.get("NTPDPY_IN_VM") == "1"
    # the guest kernel is the Debian one booted by the harness, not the host's
    assert Path(f"/lib/modules/{os.uname().release}/kernel").is_dir()
    names = {p.name: (p / "clock_name").read_text().strip()
             for p in Path("/sys/class/ptp").iterdir()}
    assert {"ptp0", "ptp1"} <= set(names)
