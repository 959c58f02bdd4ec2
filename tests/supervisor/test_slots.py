"""Worker slots: uid allocation and slot bookkeeping (no processes started)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from ntpd_py.ipc.endpoints import Endpoints
from ntpd_py.supervisor.slots import (
    SlotError,
    SlotTable,
    UidClaim,
    allocate_uid,
    make_bus_dir,
)


def test_allocate_skips_taken_named_and_running_uids() -> None:
    named = {70000}
    running = {70001}
    uid = allocate_uid((70000, 70010), taken={70002},
                       has_passwd_entry=lambda u: u in named, in_use=lambda: running)
    assert uid == 70003


def test_allocate_reads_processes_only_when_needed_and_fails_when_full() -> None:
    calls = []

    def in_use() -> set[int]:
        calls.append(1)
        return set()

    with pytest.raises(SlotError, match=r"worker-uid-range = \[70000, 70001\]"):
        allocate_uid((70000, 70001), taken={70000, 70001}, has_passwd_entry=lambda u: False,
                     in_use=in_use)
    assert calls == []
    assert allocate_uid((70000, 70001), taken=set(), has_passwd_entry=lambda u: False,
                        in_use=in_use) == 70000


def test_allocate_never_returns_a_named_uid_for_real() -> None:
    # uid 0 (root) always has a passwd entry; a range of named uids has no free one.
    with pytest.raises(SlotError):
        allocate_uid((0, 0), taken=set())


def _table(tmp_path: Path, uid_range: tuple[int, int] | None = (70000, 70010),
           bind: bool = False) -> SlotTable:
    counter = iter(range(70000, 70100))

    def allocate(rng: tuple[int, int], taken: object) -> int:
        return next(u for u in counter if u not in taken)  # type: ignore[operator]

    return SlotTable(Endpoints(str(tmp_path), str(tmp_path / "observe")), uid_range,
                     logging.getLogger("t"), allocate=allocate, bind=bind)


def test_slots_keep_uid_across_restarts_and_release_it(tmp_path: Path) -> None:
    table = _table(tmp_path)
    a = table.ensure("ptp:/dev/ptp0", "ptp")
    b = table.ensure("ntp:x", "ntp")
    m = table.ensure("metrics", "metrics")
    assert len({a.uid, b.uid, m.uid}) == 3
    assert (a.number, b.number) == (0, 1)
    assert a.path == str(tmp_path / "bus" / "0.sock")
    assert m.path is None and m.bus_slot() is None  # metrics has no bus endpoint
    assert m.number == -1
    assert table.ensure("ptp:/dev/ptp0", "ptp") is a  # a restart keeps the slot
    assert [s.worker_id for s in table.bus_slots()] == ["ptp:/dev/ptp0", "ntp:x"]
    identity = a.identity()
    assert identity is not None and identity.uid == identity.gid == a.uid
    assert identity.groups == ()
    assert m.identity(123) is not None and m.identity(123).groups == (123,)  # type: ignore[union-attr]
    assert a.user() == str(a.uid)  # no passwd entry: the number
    table.slots.pop("ntp:x")  # released without killing (test: no processes)
    c = table.ensure("server", "server")
    assert c.number == 1, "a released number is reused"


def test_not_root_slots_have_no_uid(tmp_path: Path) -> None:
    table = _table(tmp_path, uid_range=None)
    slot = table.ensure("ptp:/dev/ptp0", "ptp")
    assert slot.uid is None and slot.identity() is None and slot.path is not None


def test_slot_endpoint_is_private(tmp_path: Path) -> None:
    make_bus_dir(str(tmp_path / "bus"), as_root=False)
    assert stat.S_IMODE(os.stat(tmp_path / "bus").st_mode) == 0o700
    table = _table(tmp_path, uid_range=None, bind=True)
    slot = table.ensure("ntp:x", "ntp")
    assert slot.fd is not None and slot.path is not None
    assert stat.S_IMODE(os.stat(slot.path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(slot.path).st_mode)
    serial = slot.serial
    again = table.ensure("ntp:x", "server")  # a role change makes a new slot
    assert again.serial != serial
    table.close()
    assert not os.path.exists(str(tmp_path / "bus" / "0.sock"))


def test_bus_dir_refuses_a_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "bus"
    target.mkdir()
    os.chown(target, 1234, 1234) if os.geteuid() == 0 else pytest.skip("needs root to chown")
    with pytest.raises(SlotError, match="not a directory owned by"):
        make_bus_dir(str(target), as_root=True)


def test_a_claimed_uid_is_not_handed_out_twice(tmp_path: Path) -> None:
    # Two supervisors on one host (or two test daemons): the abstract-socket claim
    # keeps the second off the first one's uids, even with no process running.
    first = SlotTable(Endpoints(str(tmp_path), str(tmp_path / "observe")), (4_000_000_000,
                      4_000_000_005), logging.getLogger("t"), bind=False)
    second = SlotTable(Endpoints(str(tmp_path), str(tmp_path / "observe")), (4_000_000_000,
                       4_000_000_005), logging.getLogger("t"), bind=False)
    a = first.ensure("ptp:/dev/ptp0", "ptp")
    b = second.ensure("ptp:/dev/ptp0", "ptp")
    assert a.uid is not None and b.uid is not None and a.uid != b.uid
    first.close()  # released: the uid may be claimed again
    again = UidClaim(a.uid)
    again.release()
    second.close()


def test_process_uids_match_psutil_and_kill_uid_kills_only_that_uid() -> None:
    """The /proc reader sees what psutil sees; kill_uid ends a real process that runs
    with the uid only as its saved uid (a worker that tried to hide), and no other."""
    import signal
    import subprocess
    import sys

    import psutil
    from ntpd_py.supervisor.slots import kill_uid, process_uids, running_uids

    ours = dict(process_uids())
    assert tuple(ours[os.getpid()][:3]) == tuple(psutil.Process().uids())
    assert os.getuid() in running_uids()
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process under another uid")
    uid = 70_123
    hiding = subprocess.Popen(  # real and effective uid 70123 / 0 swapped: saved = 70123
        [sys.executable, "-c", f"import os,time; os.setresuid(0, 0, {uid}); "
         "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert hiding.stdout is not None and hiding.stdout.readline() == b"ready\n"
        assert dict(process_uids())[hiding.pid][2] == uid
        assert kill_uid(uid) == [hiding.pid]
        assert hiding.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert kill_uid(0) == []  # never root, whatever is asked
    finally:
        for proc in (hiding, bystander):
            proc.kill()
            proc.wait()


def test_passwd_entries_are_found_through_getent() -> None:
    from ntpd_py.supervisor.slots import _has_passwd_entry

    assert _has_passwd_entry(0)  # root
    free = next(u for u in range(61184, 65520) if not _uid_named(u))
    assert not _has_passwd_entry(free)


def _uid_named(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
