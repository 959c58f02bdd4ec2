"""Per-role seccomp filters: the profile data resolves, forbidden calls kill, allowed ones work.

Each filter test forks a process, installs a role's real filter (through
pyseccomp and libseccomp, as a worker does) and makes real system calls.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

import pytest
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError
from ntpd_py.plumbing.seccomp import install, resolve_role, role_calls
from ntpd_py.plumbing.seccomp_profiles import CONDITIONAL, GROUPS, ROLES
from ntpd_py.supervisor.children import describe_exit

# Calls that exist on x86_64 but not on aarch64's generic table; nothing else may be missing.
ARCH_SPECIFIC = {"poll", "select", "stat", "lstat", "access", "time", "chmod", "unlink",
                 "rename", "mkdir", "readlink", "dup2", "epoll_wait", "pipe", "open"}
NETWORK_ROLES = ("ntp", "server")
PROBE_FILE = f"/tmp/ntpd-py-seccomp-{os.getpid()}"  # must never be created


def test_every_role_has_a_profile_and_its_calls_resolve_on_this_arch() -> None:
    assert set(ROLES) == {"clock-control", "ptp", "ntp", "server", "metrics", "resolver", "sock", "pps", "nts-ke"}
    for role, groups in ROLES.items():
        assert set(groups) <= set(GROUPS), role
        numbers, missing = resolve_role(role)
        assert set(missing) <= ARCH_SPECIFIC, (role, missing)
        # What every process needs to run at all.
        for name in ("read", "write", "close", "mmap", "futex", "exit_group", "rt_sigreturn"):
            assert name in numbers, (role, name)
        assert role in CONDITIONAL


def test_network_parsing_roles_get_the_smallest_set() -> None:
    never = {"execve", "execveat", "fork", "vfork", "ptrace", "kill", "setuid", "mount",
             "clock_settime", "clock_adjtime", "adjtimex", "settimeofday", "process_vm_writev",
             "rename", "unlink", "chmod", "mkdir", "listen", "accept4", "bpf", "keyctl"}
    for role in NETWORK_ROLES:
        assert not role_calls(role) & never, role
        assert CONDITIONAL[role]["openat"] == "ro" and CONDITIONAL[role]["clone"] == "thread"
        assert role_calls(role) <= role_calls("clock-control") | {"bind"}
    assert CONDITIONAL["server"]["socket"] == "unix"  # its UDP sockets come from the supervisor
    # Only clock-control may steer.
    for role in ROLES:
        assert ("clock_adjtime" in role_calls(role)) == (role == "clock-control"), role


def _in_filtered_child(role: str, body: Callable[[], None], mode: bool | str = True) -> int:
    """Fork; the child installs `role`'s filter and runs `body`; return its wait status.

    The child exits 0 when `body` returns, 3 when it raised (a Python-level failure,
    not a seccomp kill), so that a test can tell the two apart.
    """
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            install(role, mode)
            body()
            code = 0
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _killed_by_sigsys(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _ntp_worker_work() -> None:
    # A thread (libzmq's I/O thread is one), a lazy read-only open, a UDP socket.
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    with open("/proc/self/status") as handle:
        assert "Seccomp:\t2" in handle.read()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.sendto(b"x", udp.getsockname())
        assert udp.recv(10) == b"x"
    import zmq

    zctx = zmq.Context()
    push = zctx.socket(zmq.PUSH)
    push.connect(f"ipc:///tmp/ntpd-py-seccomp-test-{os.getpid()}.sock")
    push.close(linger=0)
    zctx.term()


def test_allowed_calls_work_under_the_ntp_filter() -> None:
    status = _in_filtered_child("ntp", _ntp_worker_work)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_exit(status)


def test_the_pool_resolver_can_resolve_under_its_filter() -> None:
    def resolve() -> None:
        infos = socket.getaddrinfo("localhost", 123, type=socket.SOCK_DGRAM)
        assert any(info[4][0] in ("127.0.0.1", "::1") for info in infos)
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"[]")
        assert os.read(read_fd, 10) == b"[]"

    status = _in_filtered_child("resolver", resolve)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_exit(status)


@pytest.mark.parametrize(
    ("role", "forbidden"),
    [
        ("ntp", lambda: os.fork()),
        ("ntp", lambda: os.execv("/bin/true", ["/bin/true"])),
        ("ntp", lambda: os.kill(os.getppid(), 0)),  # no signalling another process
        ("server", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
        ("server", lambda: os.fork()),
        ("ptp", lambda: os.execv("/bin/true", ["/bin/true"])),
        ("metrics", lambda: os.fork()),
        ("clock-control", lambda: os.fork()),
        ("resolver", lambda: threading.Thread(target=lambda: None).start()),
    ],
)
def test_a_forbidden_call_kills_the_process_with_sigsys(
    role: str, forbidden: Callable[[], object]
) -> None:
    status = _in_filtered_child(role, lambda: (forbidden(), None)[1])
    assert _killed_by_sigsys(status), describe_exit(status)
    assert describe_exit(status) == "killed by seccomp (SIGSYS)"
    assert not os.path.exists(PROBE_FILE)


@pytest.mark.parametrize("role", ["ntp", "server", "ptp", "metrics", "resolver"])
def test_a_write_open_fails_with_eacces_but_reads_work(role: str) -> None:
    def probe() -> None:
        for mode in ("w", "a", "r+", "x"):
            try:
                open(PROBE_FILE, mode).close()
            except PermissionError:
                continue
            raise AssertionError(f"open({PROBE_FILE!r}, {mode!r}) was allowed")
        with open("/etc/hostname", "rb") as handle:
            handle.read()

    status = _in_filtered_child(role, probe)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_exit(status)
    assert not os.path.exists(PROBE_FILE)


def test_log_mode_lets_the_call_through_and_off_installs_nothing() -> None:
    def probe() -> None:
        os.kill(os.getpid(), 0)  # not in ntp's list: logged by the kernel, not killed

    assert os.WEXITSTATUS(_in_filtered_child("ntp", probe, "log")) == 0

    def unfiltered() -> None:
        with open("/proc/self/status") as handle:
            assert "Seccomp:\t0" in handle.read()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    status = _in_filtered_child("ntp", unfiltered, False)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_describe_exit_names_seccomp_only_for_sigsys() -> None:
    assert describe_exit(signal.SIGSYS) == "killed by seccomp (SIGSYS)"
    assert describe_exit(signal.SIGKILL) == "killed by SIGKILL"


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ('"log"', "log")])
def test_config_seccomp_values(text: str, value: bool | str) -> None:
    config = load_config_text(f"[daemon]\nseccomp = {text}\n", "ntp.toml")
    assert config.daemon.seccomp == value
    assert load_config_text("", "ntp.toml").daemon.seccomp is True


@pytest.mark.parametrize("text", ['"yes"', "1", '"LOG"', "[]"])
def test_config_seccomp_invalid_names_file_and_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f"[daemon]\nseccomp = {text}\n", "ntp.toml")
    message = str(info.value)
    assert "ntp.toml:2" in message and "daemon.seccomp" in message
    assert 'expected true, false or "log"' in message


@pytest.mark.parametrize("outer_blocks_seccomp", [True, False])
def test_under_an_outer_filter_like_systemds(outer_blocks_seccomp: bool) -> None:
    """systemd's SystemCallFilter=@system-service alone refuses seccomp(2) with EPERM:
    then our filter cannot load and the child must say why (the unit adds `seccomp`)."""
    import errno

    import pyseccomp
    from ntpd_py.plumbing.seccomp import SeccompError

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            outer = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
            if outer_blocks_seccomp:
                outer.add_rule(pyseccomp.ERRNO(errno.EPERM), "seccomp")
            outer.add_rule(pyseccomp.ERRNO(errno.EPERM), "swapon")  # a non-empty filter
            outer.load()
            try:
                install("ntp")
                os.write(write_fd, b"installed")
            except SeccompError as exc:
                os.write(write_fd, str(exc).encode()[:4000])
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read().decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_exit(status)
    if outer_blocks_seccomp:
        assert "loading the ntp seccomp filter failed" in said
        assert "SystemCallFilter=" in said and "[daemon] seccomp = false" in said
    else:
        assert said == "installed"


def test_the_systemd_unit_lets_children_install_their_filter() -> None:
    from pathlib import Path

    unit = (Path(__file__).resolve().parents[2] / "deploy/systemd/ntpd-py.service").read_text()
    allow = [line.split("=", 1)[1].split() for line in unit.splitlines()
             if line.startswith("SystemCallFilter=") and not line.startswith("SystemCallFilter=~")]
    assert any("seccomp" in names for names in allow), allow


def _tgkill(pid: int) -> int:
    """tgkill(pid, pid, 0) through libc, bypassing Python's os.kill (which is kill(2))."""
    import ctypes

    import pyseccomp

    number = pyseccomp.resolve_syscall(pyseccomp.system_arch(), "tgkill")
    return int(ctypes.CDLL(None, use_errno=True).syscall(number, pid, pid, 0))


def test_every_role_compiles_to_a_program_with_one_pid_to_place() -> None:
    from ntpd_py.plumbing.seccomp import PID_PLACEHOLDER, compile_program

    for role in ROLES:
        for mode in (True, "log"):
            program = compile_program(role, mode)
            assert len(program.code) % 8 == 0 and program.allowed > 90, role
            assert program.pid_at is not None, role  # every role may tgkill itself
            word = int.from_bytes(program.code[program.pid_at:program.pid_at + 4],
                                  sys.byteorder)
            assert word == PID_PLACEHOLDER, role


def test_a_program_prepared_before_fork_is_the_one_the_child_loads() -> None:
    """What the daemon does: compile in the parent, fork, load in the child. The
    child's own pid is the only tgkill target; another process's is refused."""
    from ntpd_py.plumbing import seccomp

    parent = os.getpid()

    def run(prepared: bool, role: str) -> tuple[int, bytes]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                if not prepared:
                    seccomp._programs.clear()  # the child compiles its own
                install(role)
                if role == "ntp":
                    _ntp_worker_work()
                # pthread_kill goes through tgkill(getpid(), tid, sig): allowed to itself.
                signal.pthread_kill(threading.get_ident(), 0)
                if _tgkill(os.getpid()) == 0:
                    os.write(write_fd, b"self ok")
                _tgkill(parent)  # must not return
                os.write(write_fd, b", parent too")
            finally:
                os._exit(3)
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as pipe:
            return status, pipe.read()

    try:
        seccomp.prepare(["ntp", "server"], True)
        assert {("ntp", True), ("server", True)} <= set(seccomp._programs)
        for prepared, role in ((True, "ntp"), (True, "server"), (False, "server")):
            status, said = run(prepared, role)
            assert said == b"self ok", (prepared, role, said)
            assert _killed_by_sigsys(status), describe_exit(status)
    finally:
        seccomp._programs.clear()


def test_prepare_skips_off_and_compiles_each_role_once() -> None:
    from ntpd_py.plumbing import seccomp

    try:
        seccomp.prepare(["ptp", "ptp", "server"], False)
        assert seccomp._programs == {}
        seccomp.prepare(["ptp", "server"], "log")
        first = seccomp._programs[("ptp", "log")]
        seccomp.prepare(["ptp"], "log")
        assert seccomp._programs[("ptp", "log")] is first
        assert set(seccomp._programs) == {("ptp", "log"), ("server", "log")}
    finally:
        seccomp._programs.clear()
