"""supervisor/dirs.py and runtime_watch.py: own only what you create; notice what vanishes."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from ntpd_py.supervisor.dirs import DirectoryError, ensure_dir
from ntpd_py.supervisor.runtime_watch import CHECK_INTERVAL_NS, RuntimeWatch

ME = (os.geteuid(), os.getegid())
KEY = "[daemon] runtime-dir"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_directory_is_created_with_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    assert ensure_dir(str(path), KEY, ME, 0o750) is True
    assert _mode(path) == 0o750
    assert (path.stat().st_uid, path.stat().st_gid) == ME


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_as_root_a_created_directory_belongs_to_the_daemon_user(tmp_path: Path) -> None:
    path = tmp_path / "run"
    ensure_dir(str(path), KEY, (65534, 65534), 0o750)
    assert (path.stat().st_uid, path.stat().st_gid, _mode(path)) == (65534, 65534, 0o750)


def test_an_existing_safe_directory_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    os.chmod(path, 0o711)
    assert ensure_dir(str(path), KEY, ME, 0o750) is False
    assert _mode(path) == 0o711


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_an_existing_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "run"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(DirectoryError) as info:
        ensure_dir(str(path), KEY, ME, 0o750)
    message = str(info.value)
    assert f'{KEY} = "{path}"' in message and "writable by" in message
    assert f"mode {mode:04o}" in message
    assert _mode(path) == mode  # untouched


def test_the_exact_mode_asked_for_is_accepted_even_with_group_write(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    os.chmod(path, 0o770)
    assert ensure_dir(str(path), KEY, ME, 0o770) is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_an_existing_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    os.chown(path, 4242, 4242)
    os.chmod(path, 0o700)
    with pytest.raises(DirectoryError) as info:
        ensure_dir(str(path), KEY, (65534, 65534), 0o750)
    assert "owned by uid 4242" in str(info.value)
    assert path.stat().st_uid == 4242 and _mode(path) == 0o700


def test_a_shared_sticky_directory_is_accepted_only_where_allowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    if os.geteuid() == 0:
        os.chown(shared, 0, 0)
        assert ensure_dir(str(shared), "[observability] observation-path", ME, 0o750,
                          allow_shared=True) is False
        assert _mode(shared) == 0o1777 and shared.stat().st_uid == 0
    with pytest.raises(DirectoryError):
        ensure_dir(str(shared), KEY, ME, 0o750)


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.write_text("")
    with pytest.raises(DirectoryError, match="not a directory"):
        ensure_dir(str(path), KEY, ME, 0o750)


# -- runtime watch ----------------------------------------------------------------------


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def test_watch_reports_a_deleted_runtime_directory(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    watch = RuntimeWatch(str(runtime), str(runtime / "observe"))
    watch.arm(0)
    assert watch.check(CHECK_INTERVAL_NS, 100) is None
    runtime.rmdir()
    assert watch.check(CHECK_INTERVAL_NS - 1, 100) is None  # not due yet
    assert watch.check(2 * CHECK_INTERVAL_NS, 100) == f"directory {runtime} was deleted"


def test_watch_reports_a_replaced_runtime_directory(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    watch = RuntimeWatch(str(runtime), str(runtime / "observe"))
    watch.arm(0)
    runtime.rename(tmp_path / "old")
    runtime.mkdir()
    assert watch.check(CHECK_INTERVAL_NS, 100) == f"directory {runtime} was replaced by another one"


def test_watch_reports_a_deleted_socket_only_while_clock_control_lives_on(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    watch = RuntimeWatch(str(runtime), str(runtime / "observe"))
    watch.arm(0)
    sockets = [_bind(runtime / "state.sock"), _bind(runtime / "observe")]
    try:
        t = CHECK_INTERVAL_NS
        assert watch.check(t, 100) is None
        # clock-control restarted (pid 101): its sockets vanish and come back, no alarm
        os.unlink(runtime / "state.sock")
        assert watch.check(2 * t, 101) is None
        assert watch.check(3 * t, 101) is None
        sockets.append(_bind(runtime / "state.sock"))
        assert watch.check(4 * t, 101) is None
        # deleted under a running clock-control: reported at the second check
        os.unlink(runtime / "observe")
        assert watch.check(5 * t, 101) is None
        assert watch.check(6 * t, 101) == f"socket {runtime / 'observe'} was deleted"
    finally:
        for sock in sockets:
            sock.close()


def test_watch_reports_a_socket_clock_control_never_made_after_four_checks(
        tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    watch = RuntimeWatch(str(runtime), str(runtime / "observe"))
    watch.arm(0, (str(runtime / "state.sock"),))
    sockets = [_bind(runtime / "observe")]
    try:
        t = CHECK_INTERVAL_NS
        assert watch.check(t, None) is None  # clock-control not started: nothing expected
        for n in (2, 3, 4):
            assert watch.check(n * t, 100) is None  # a slow start is not a deletion
        assert watch.check(5 * t, 100) == (
            f"socket {runtime / 'state.sock'} is missing (clock-control did not re-create "
            "it in 6 s)")
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="changes uid in a forked child: needs root")
def test_watch_finds_sockets_in_a_runtime_directory_it_may_not_list() -> None:
    # Under the systemd unit the supervisor is root without CAP_DAC_READ_SEARCH: the
    # runtime directory (0751, clock-control's) can be passed through but not listed.
    # Played here by a forked child with a uid of its own.
    import json
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="ntpdpy-watch-", dir="/tmp"))  # reachable by uid 4242
    os.chmod(top, 0o755)
    runtime = top / "run"
    runtime.mkdir()
    os.chmod(runtime, 0o751)
    sockets = [_bind(runtime / "observe"), _bind(runtime / "state.sock")]
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setresgid(4242, 4242, 4242)
                os.setresuid(4242, 4242, 4242)
                try:
                    os.listdir(runtime)
                    listable = "listable"
                except PermissionError:
                    listable = "unlistable"
                watch = RuntimeWatch(str(runtime), str(runtime / "observe"))
                watch.arm(0, (str(runtime / "state.sock"),))
                results = [watch.check(n * CHECK_INTERVAL_NS, 100) for n in range(1, 7)]
                os.write(w, json.dumps([listable, results]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as pipe:
            listable, results = json.load(pipe)
        os.waitpid(pid, 0)
        assert listable == "unlistable"
        assert results == [None] * 6
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(top, ignore_errors=True)


def test_a_read_only_file_system_names_the_key_its_value_and_the_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What ProtectSystem=strict does to a directory outside ReadWritePaths= (EROFS).
    import errno

    def read_only(path: str, mode: int = 0o777) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "mkdir", read_only)
    directory = tmp_path / "ntpd-rs"
    with pytest.raises(DirectoryError) as info:
        ensure_dir(str(directory), "[observability] observation-path", ME, 0o750,
                   allow_shared=True, value=f"{directory}/observe")
    message = str(info.value)
    assert message.startswith(
        f'[observability] observation-path = "{directory}/observe": its directory {directory}: '
        "cannot create the directory: Read-only file system")
    assert "ReadWritePaths=" in message and "/run/ntpd-rs" in message
