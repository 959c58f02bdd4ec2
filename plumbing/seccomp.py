"""Install a role's seccomp filter (allow-list, default: kill the process).

Each child calls :func:`install` after dropping privileges (``no_new_privs`` is
set) and before its role main runs, so every thread libzmq starts later
inherits the filter. The lists are in :mod:`.seccomp_profiles`; the binding is
``pyseccomp`` (ctypes over libseccomp.so.2). A call outside the list kills the
whole process with SIGSYS; the supervisor reports it as "killed by seccomp".

libseccomp compiles the filter; the supervisor does that once per role, before
it forks (:func:`prepare`), and keeps the BPF program libseccomp exports. A
child then only writes its own pid into the one rule that needs it (tgkill to
itself) and hands the program to seccomp(2): no rule database, no name
resolution, no Python objects of its own. Building the filter in every child
cost each of them about 0.3 MB of private memory (benchmarks/memory.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .seccomp_profiles import CONDITIONAL, DENIED_WITH_ERRNO, GROUPS, ROLES

# Imported here, so that the supervisor's preload brings it in before any fork (a
# child may not be able to read the Python installation once it has dropped root).
_binding: Any = None
_binding_error: Exception | None = None
try:
    _binding = importlib.import_module("pyseccomp")  # untyped: used through Any
except (ImportError, RuntimeError) as _exc:  # RuntimeError: libseccomp.so.2 missing
    _binding_error = _exc

__all__ = ["SeccompError", "install", "prepare", "resolve_role", "role_calls"]

CLONE_THREAD = 0x00010000
PR_SET_NAME = 15
PR_GET_NAME = 16
# open flags that make an openat write or create something.
_WRITE_FLAG_BITS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
# Stands for the child's pid in the tgkill rule of a program compiled before fork.
# Above the kernel's largest pid (2**22), so no real argument ever equals it, and
# found exactly once in the program (checked) so that patching it is unambiguous.
PID_PLACEHOLDER = 0x7E5A1D5B
_BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: how libseccomp compares an argument word

# Set up at import, in the supervisor before fork, so a child creates no ctypes types.
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompError(Exception):
    """The filter could not be built or loaded; the child must not run unfiltered."""


@dataclass(frozen=True)
class Program:
    """A role's filter as libseccomp compiled it, ready for seccomp(2)."""

    code: bytes  # struct sock_filter[], native byte order
    pid_at: int | None  # byte offset of the placeholder pid's word in `code`
    seccomp_nr: int  # the seccomp(2) system call's number on this architecture
    allowed: int  # how many calls the role's list resolved to (for the log)


# (role, mode) -> Program, filled by prepare() in the supervisor and inherited at fork.
_programs: dict[tuple[str, bool | str], Program] = {}


def role_calls(role: str) -> set[str]:
    """Every unconditionally allowed call name of `role` (before arch resolution)."""
    if role not in ROLES:
        raise SeccompError(f"no seccomp profile for role {role!r}")
    return {name for group in ROLES[role] for name in GROUPS[group]}


def _module() -> Any:
    if _binding is None:
        raise SeccompError(
            f"cannot load the seccomp binding ({_binding_error}): install pyseccomp and "
            "libseccomp2, or set [daemon] seccomp = false"
        )
    return _binding


def resolve_role(role: str) -> tuple[dict[str, int], list[str]]:
    """Names of `role` resolved on this architecture, and the names it lacks."""
    sc = _module()
    arch = sc.system_arch()
    resolved: dict[str, int] = {}
    missing: list[str] = []
    names = role_calls(role) | set(CONDITIONAL.get(role, {})) | set(DENIED_WITH_ERRNO)
    for name in sorted(names):
        try:
            number = sc.resolve_syscall(arch, name)
        except (OSError, ValueError):
            number = -1
        # libseccomp gives negative pseudo-numbers for calls this arch does not have.
        if isinstance(number, int) and number >= 0:
            resolved[name] = number
        else:
            missing.append(name)
    return resolved, missing


def _add(flt: Any, sc: Any, action: int, name: str, numbers: dict[str, int],
         *args: Any) -> None:
    if name in numbers:
        flt.add_rule(action, name, *args)


def _conditional(flt: Any, sc: Any, role: str, allow: int, numbers: dict[str, int],
                 pid: int) -> None:
    rules = CONDITIONAL.get(role, {})
    if rules.get("clone") == "thread":
        _add(flt, sc, allow, "clone", numbers,
             sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
    mode = rules.get("openat")
    if mode == "rw":
        _add(flt, sc, allow, "openat", numbers)
    elif mode == "ro":
        _add(flt, sc, allow, "openat", numbers, sc.Arg(2, sc.MASKED_EQ, _WRITE_FLAGS, 0))
        # A write-open fails as it would for an unprivileged user (EACCES) rather than
        # killing: CPython tries to write a missing .pyc and carries on when it cannot.
        for flag in _WRITE_FLAG_BITS:
            _add(flt, sc, sc.ERRNO(errno.EACCES), "openat", numbers,
                 sc.Arg(2, sc.MASKED_EQ, flag, flag))
    families = {"unix": [socket.AF_UNIX],
                "inet": [socket.AF_UNIX, socket.AF_INET, socket.AF_INET6]}
    for family in families.get(rules.get("socket", ""), []):
        _add(flt, sc, allow, "socket", numbers, sc.Arg(0, sc.EQ, family))
    if rules.get("tgkill") == "self":
        _add(flt, sc, allow, "tgkill", numbers, sc.Arg(0, sc.EQ, pid))
    if rules.get("sched_setscheduler") == "other":
        _add(flt, sc, allow, "sched_setscheduler", numbers, sc.Arg(1, sc.EQ, os.SCHED_OTHER))
    if rules.get("prctl") == "name":
        for option in (PR_SET_NAME, PR_GET_NAME):
            _add(flt, sc, allow, "prctl", numbers, sc.Arg(0, sc.EQ, option))


def compile_program(role: str, mode: bool | str = True) -> Program:
    """Have libseccomp compile `role`'s filter (tgkill allowed to a placeholder pid)."""
    sc = _module()
    numbers, _missing = resolve_role(role)
    default = sc.LOG if mode == "log" else sc.KILL_PROCESS
    try:
        flt = sc.SyscallFilter(default)
        # A binary tree instead of a linear list: ~100 calls are allowed, and the
        # server's hot path (recvmmsg/sendmmsg) should not pay for them all.
        with contextlib.suppress(OSError):  # libseccomp < 2.5 lacks the attribute
            flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
        for name in sorted(role_calls(role)):
            _add(flt, sc, sc.ALLOW, name, numbers)
        _conditional(flt, sc, role, sc.ALLOW, numbers, PID_PLACEHOLDER)
        for name in DENIED_WITH_ERRNO:
            _add(flt, sc, sc.ERRNO(errno.ENOSYS), name, numbers)
        fd = os.memfd_create("ntpd-py-seccomp", os.MFD_CLOEXEC)
        try:
            with os.fdopen(fd, "rb", closefd=False) as handle:  # export_bpf wants a file
                flt.export_bpf(handle)
            code = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        seccomp_nr = sc.resolve_syscall(sc.system_arch(), "seccomp")
    except OSError as exc:
        raise SeccompError(f"building the {role} seccomp filter failed: {exc}") from exc
    if not code or len(code) % _BPF_INSN.size or len(code) // _BPF_INSN.size > 0xFFFF:
        raise SeccompError(f"libseccomp exported a malformed {role} filter ({len(code)} bytes)")
    places = [offset for offset in range(0, len(code), _BPF_INSN.size)
              if _BPF_INSN.unpack_from(code, offset)[3] == PID_PLACEHOLDER]
    wants_pid = CONDITIONAL.get(role, {}).get("tgkill") == "self" and "tgkill" in numbers
    if len(places) != (1 if wants_pid else 0) or any(
            _BPF_INSN.unpack_from(code, at)[0] != _BPF_JEQ_K for at in places):
        # Patching would be a guess: refuse rather than load a filter that is not the one
        # libseccomp meant (the tgkill rule could end up matching another process).
        raise SeccompError(f"cannot place the pid in the {role} seccomp filter "
                           f"({len(places)} candidate instructions)")
    pid_at = places[0] + 4 if places else None  # k follows code(2) jt(1) jf(1)
    return Program(bytes(code), pid_at, int(seccomp_nr), len(numbers))


def prepare(roles: Iterable[str], mode: bool | str) -> None:
    """In the supervisor, before forking: compile the filters of `roles` once.

    Children inherit the programs and only load them. A role whose program is not
    here (a reload that changed `[daemon] seccomp`, a failure now) is compiled by
    the child itself, which then reports any error.
    """
    if mode is False or _binding is None:
        return
    for role in roles:
        if (role, mode) not in _programs:
            with contextlib.suppress(SeccompError):
                _programs[(role, mode)] = compile_program(role, mode)


def load_program(program: Program, pid: int) -> None:
    """Set no_new_privs and load `program`, with `pid` as the one tgkill may target."""
    code = bytearray(program.code)
    if program.pid_at is not None:
        struct.pack_into("=I", code, program.pid_at, pid)
    buffer = ctypes.create_string_buffer(bytes(code), len(code))
    fprog = _SockFprog(len(code) // _BPF_INSN.size, ctypes.addressof(buffer))
    # As libseccomp's seccomp_load does: no_new_privs first (the kernel requires it of a
    # process without CAP_SYS_ADMIN), then seccomp(2) with no flags.
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    if _syscall(ctypes.c_long(program.seccomp_nr), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                ctypes.c_ulong(0), ctypes.byref(fprog)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")


def install(role: str, mode: bool | str = True) -> int:
    """Load `role`'s filter into this process; return how many calls it allows.

    `mode` True: a call outside the list kills the process (SIGSYS);
    "log": it is allowed and logged by the kernel (audit); False: nothing.
    """
    if mode is False:
        return 0
    program = _programs.get((role, mode))
    if program is None:
        program = compile_program(role, mode)
    try:
        load_program(program, os.getpid())
    except OSError as exc:
        raise SeccompError(
            f"loading the {role} seccomp filter failed: {exc} (an outer filter that refuses "
            "seccomp(2), such as a systemd SystemCallFilter= without `seccomp`? "
            "or set [daemon] seccomp = false)"
        ) from exc
    return program.allowed


def _trim_heap() -> None:
    """Give the heap that building the filter used back to the kernel.

    Only when the child had to build its filter itself: libseccomp's rule database
    is freed once exported, but glibc keeps freed heap pages (about 0.3 MB, measured
    with benchmarks/memory.py). malloc_trim(3) returns them (brk/madvise, allowed).
    """
    with contextlib.suppress(AttributeError, OSError):  # not glibc
        _libc.malloc_trim(0)


def install_for_child(role: str, mode: bool | str, log: Any) -> None:
    """In a freshly set-up child: install the filter or exit; say what was done."""
    if mode is False:
        log.info("seccomp: off ([daemon] seccomp = false)")
        return
    prepared = (role, mode) in _programs
    try:
        count = install(role, mode)
    except SeccompError as exc:
        # Running unfiltered when a filter was asked for would hide the problem.
        log.error("seccomp: %s", exc)
        raise SystemExit(71) from exc
    if not prepared:
        _trim_heap()
    how = "log only" if mode == "log" else "kill on violation"
    log.debug("seccomp: %s filter installed (%d calls, %s)", role, count, how)
