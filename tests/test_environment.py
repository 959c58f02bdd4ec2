"""The suite must never be able to steer the clock of the machine it runs on."""

from __future__ import annotations

CAP_SYS_TIME = 25


def _caps(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"{field} missing from /proc/self/status")


def test_runs_without_cap_sys_time() -> None:
    # The README's test command drops CAP_SYS_TIME from the bounding set
    # (capsh --drop=cap_sys_time), so no test, however wrong, can set the clock.
    assert not _caps("CapBnd") & (1 << CAP_SYS_TIME), (
        "CAP_SYS_TIME is in the bounding set: run the suite through the README's "
        "command (capsh --drop=cap_sys_time -- -c '...')"
    )
    assert not _caps("CapEff") & (1 << CAP_SYS_TIME)
    assert not _caps("CapPrm") & (1 << CAP_SYS_TIME)
