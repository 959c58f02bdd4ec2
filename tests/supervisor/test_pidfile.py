"""supervisor.pid: believed only for a live ntpd-py process that owns the file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.core.exit_codes import EX_TEMPFAIL, EX_UNAVAILABLE
from ntpd_py.supervisor.ctl_client import CtlError, request
from ntpd_py.supervisor.pidfile import (
    PIDFILE_NAME,
    remove_pidfile,
    supervisor_pid,
    write_pidfile,
)


@pytest.fixture
def named_ntpd() -> Iterator[subprocess.Popen[bytes]]:
    # a live process whose command line says ntpd-py, as the supervisor's does
    proc = subprocess.Popen(["bash", "-c", "exec -a ntpd-py sleep 30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def _write(runtime: Path, pid: int) -> None:
    (runtime / PIDFILE_NAME).write_text(f"{pid}\n")


def test_write_and_remove_our_own(tmp_path: Path) -> None:
    assert write_pidfile(str(tmp_path))
    path = tmp_path / PIDFILE_NAME
    assert path.read_text() == f"{os.getpid()}\n" and path.stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    remove_pidfile(str(tmp_path))
    assert not path.exists()


def test_a_newer_supervisors_file_is_left_alone(tmp_path: Path) -> None:
    _write(tmp_path, os.getpid() + 1)
    remove_pidfile(str(tmp_path))
    assert (tmp_path / PIDFILE_NAME).exists()


def test_live_ntpd_process_is_believed(tmp_path: Path,
                                       named_ntpd: subprocess.Popen[bytes]) -> None:
    import time

    time.sleep(0.2)  # let exec -a happen
    _write(tmp_path, named_ntpd.pid)
    assert supervisor_pid(str(tmp_path)) == named_ntpd.pid


def test_dead_foreign_or_missing_are_not(tmp_path: Path) -> None:
    assert supervisor_pid(str(tmp_path)) is None  # no file
    _write(tmp_path, os.getpid())  # alive, but not an ntpd-py process
    assert supervisor_pid(str(tmp_path)) is None
    dead = subprocess.Popen(["bash", "-c", "exec -a ntpd-py true"])
    dead.wait(5)
    _write(tmp_path, dead.pid)
    assert supervisor_pid(str(tmp_path)) is None
    (tmp_path / PIDFILE_NAME).write_text("garbage")
    assert supervisor_pid(str(tmp_path)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own a file as another user")
def test_a_file_not_owned_by_the_process_is_not_believed(
        tmp_path: Path, named_ntpd: subprocess.Popen[bytes]) -> None:
    import time

    time.sleep(0.2)
    _write(tmp_path, named_ntpd.pid)
    os.chown(tmp_path / PIDFILE_NAME, 65534, 65534)  # as a worker (nobody) could write it
    assert supervisor_pid(str(tmp_path)) is None


def test_ntpctl_says_restarting_while_the_supervisor_lives(
        tmp_path: Path, named_ntpd: subprocess.Popen[bytes]) -> None:
    import time

    time.sleep(0.2)
    control = str(tmp_path / "observe")
    with pytest.raises(CtlError) as info:
        request(control, "status", str(tmp_path))
    assert info.value.code == EX_UNAVAILABLE and "not running" in str(info.value)
    _write(tmp_path, named_ntpd.pid)
    with pytest.raises(CtlError) as info:
        request(control, "status", str(tmp_path))
    assert info.value.code == EX_TEMPFAIL
    assert str(info.value) == (
        f"ntpd-py is running (supervisor pid {named_ntpd.pid}) but clock-control is not "
        f"answering at {control} (restarting?)")
