"""The child prologue, in a real forked child: inherited fds closed, a clean
environment, privileges dropped to the slot's identity, the role main's exit code."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
from pathlib import Path

import pytest
from ntpd_py.core.config import Config
from ntpd_py.core.exit_codes import EX_CRASH
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.plumbing.child import ChildContext, run_child
from ntpd_py.plumbing.privileges import Identity, PrivilegeError, lookup_identity
from ntpd_py.plumbing.signals import StopFlag
from ntpd_py.plumbing.tcp_listen import bind_listener


def _config(tmp_path: Path) -> Config:
    return Config.model_validate({"daemon": {"runtime-dir": str(tmp_path), "seccomp": False}})


def _fork_child(ctx: ChildContext, report: socket.socket, code: int) -> tuple[dict[str, object], int]:
    """Run `run_child` in a forked child whose main reports what it sees; (report, status)."""

    def main(child: ChildContext) -> int:
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        seen = {"uid": os.getuid(), "euid": os.geteuid(), "env": dict(os.environ), "fds": fds,
                "worker": child.worker_id}
        os.write(child.link_fd, json.dumps(seen).encode())
        if code == -1:
            raise RuntimeError("a role main that raises")
        return code

    pid = os.fork()
    if pid == 0:
        run_child(ctx, main)  # never returns
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    report.settimeout(5)
    data = json.loads(report.recv(65536))
    return data, os.waitstatus_to_exitcode(status)


def _context(tmp_path: Path, link_fd: int, identity: Identity | None = None) -> ChildContext:
    return ChildContext(config=_config(tmp_path), worker_id="ptp:/dev/ptp0", role="ptp",
                        supervisor_pid=os.getpid(), link_fd=link_fd,
                        spec=WorkerSpec("ptp:/dev/ptp0", "ptp", "f"), seccomp_profile="ptp",
                        identity=identity)


def test_the_child_keeps_only_its_link_and_a_clean_environment(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    link_fd = theirs.fileno()
    stray = os.open(os.devnull, os.O_RDONLY)  # inherited, not ours to keep
    os.environ["NTPD_PY_TEST_SECRET"] = "leak"
    try:
        seen, code = _fork_child(_context(tmp_path, theirs.fileno()), ours, 7)
    finally:
        del os.environ["NTPD_PY_TEST_SECRET"]
        os.close(stray)
        ours.close()
        theirs.close()
    assert code == 7  # the role main's code is the process's exit code
    assert seen["worker"] == "ptp:/dev/ptp0"
    env = seen["env"]
    assert isinstance(env, dict) and "NTPD_PY_TEST_SECRET" not in env
    assert set(env) == {"PATH", "LANG"}
    fds = seen["fds"]
    assert isinstance(fds, list)
    # Beyond stdio only the link and the /proc listing's own descriptor (which may
    # reuse the stray's number once it is closed): the stray did not survive.
    assert link_fd in fds
    assert len({fd for fd in fds if fd > 2} - {link_fd}) <= 1


def test_a_role_main_that_raises_ends_the_child_with_the_crash_code(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    try:
        _, code = _fork_child(_context(tmp_path, theirs.fileno()), ours, -1)
    finally:
        ours.close()
        theirs.close()
    assert code == EX_CRASH


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_the_child_runs_as_the_identity_it_was_given(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    identity = Identity("nobody", "nogroup", nobody.pw_uid, nobody.pw_gid)
    ours, theirs = socket.socketpair()
    try:
        seen, code = _fork_child(_context(tmp_path, theirs.fileno(), identity), ours, 0)
    finally:
        ours.close()
        theirs.close()
    assert code == 0
    assert seen["uid"] == seen["euid"] == nobody.pw_uid


def test_a_missing_user_or_group_says_how_to_create_it() -> None:
    with pytest.raises(PrivilegeError, match="systemd-sysusers"):
        lookup_identity("ntpd-py-no-such-user", "root")
    with pytest.raises(PrivilegeError, match="groupadd"):
        lookup_identity("root", "ntpd-py-no-such-group")


def test_sigterm_only_sets_the_stop_flag() -> None:
    previous = {sig: signal.getsignal(sig) for sig in
                (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    flag = StopFlag()
    try:
        flag.install()
        assert not flag()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_tcp_listener_binds_loopback_and_refuses_a_bad_address() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sock = bind_listener(f"127.0.0.1:{port}")
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()
    with pytest.raises((OSError, ValueError)):
        bind_listener("192.0.2.1:4123")  # not an address of this machine: bind fails
