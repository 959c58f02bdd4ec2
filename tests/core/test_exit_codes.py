"""The exit-status table: one value per meaning, and the unit file agrees with it."""

from __future__ import annotations

from pathlib import Path

from ntpd_py.core import exit_codes

REPO = Path(__file__).resolve().parents[2]


def _table() -> dict[str, int]:
    return {name: getattr(exit_codes, name) for name in exit_codes.__all__}


def test_every_status_has_one_meaning() -> None:
    table = _table()
    assert len(set(table.values())) == len(table), table


def test_the_sysexits_values() -> None:
    # sysexits.h; EX_CRASH and EX_USAGE are Python's and argparse's own statuses
    assert _table() == {"EX_OK": 0, "EX_CRASH": 1, "EX_USAGE": 2, "EX_UNAVAILABLE": 69,
                        "EX_SOFTWARE": 70, "EX_OSERR": 71, "EX_CANTCREAT": 73,
                        "EX_TEMPFAIL": 75, "EX_PROTOCOL": 76, "EX_NOPERM": 77,
                        "EX_CONFIG": 78}


def test_the_unit_does_not_restart_after_the_statuses_a_restart_cannot_fix() -> None:
    unit = (REPO / "deploy" / "systemd" / "ntpd-py.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("RestartPreventExitStatus="))
    statuses = {int(v) for v in line.split("=", 1)[1].split()}
    # a refused step, an unsafe directory, no permission, a broken configuration;
    # EX_TEMPFAIL (the runtime directory vanished) is restarted on purpose
    assert statuses == {exit_codes.EX_SOFTWARE, exit_codes.EX_CANTCREAT,
                        exit_codes.EX_NOPERM, exit_codes.EX_CONFIG}
    assert exit_codes.EX_TEMPFAIL not in statuses
