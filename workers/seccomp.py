"""Install a role's seccomp filter (allow-list, default: kill the process).

Each child calls :func:`install` after dropping privileges (``no_new_privs`` is
set) and before its role main runs, so every thread libzmq starts later
inherits the filter. The lists are in :mod:`.seccomp_profiles`; the binding is
``pyseccomp`` (ctypes over libseccomp.so.2). A call outside the list kills the
whole process with SIGSYS; the supervisor reports it as "killed by seccomp".
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import socket
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

__all__ = ["SeccompError", "install", "resolve_role", "role_calls"]

CLONE_THREAD = 0x00010000
PR_SET_NAME = 15
PR_GET_NAME = 16
# open flags that make an openat write or create something.
_WRITE_FLAG_BITS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SeccompError(Exception):
    """The filter could not be built or loaded; the child must not run unfiltered."""


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


def _conditional(flt: Any, sc: Any, role: str, allow: int, numbers: dict[str, int]) -> None:
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
        _add(flt, sc, allow, "tgkill", numbers, sc.Arg(0, sc.EQ, os.getpid()))
    if rules.get("sched_setscheduler") == "other":
        _add(flt, sc, allow, "sched_setscheduler", numbers, sc.Arg(1, sc.EQ, os.SCHED_OTHER))
    if rules.get("prctl") == "name":
        for option in (PR_SET_NAME, PR_GET_NAME):
            _add(flt, sc, allow, "prctl", numbers, sc.Arg(0, sc.EQ, option))


def install(role: str, mode: bool | str = True) -> int:
    """Load `role`'s filter into this process; return how many calls it allows.

    `mode` True: a call outside the list kills the process (SIGSYS);
    "log": it is allowed and logged by the kernel (audit); False: nothing.
    """
    if mode is False:
        return 0
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
        _conditional(flt, sc, role, sc.ALLOW, numbers)
        for name in DENIED_WITH_ERRNO:
            _add(flt, sc, sc.ERRNO(errno.ENOSYS), name, numbers)
        flt.load()
    except OSError as exc:
        raise SeccompError(
            f"loading the {role} seccomp filter failed: {exc} (an outer filter that refuses "
            "seccomp(2), such as a systemd SystemCallFilter= without `seccomp`? "
            "or set [daemon] seccomp = false)"
        ) from exc
    return len(numbers)


def _trim_heap() -> None:
    """Give the heap that building the filter used back to the kernel.

    libseccomp's rule database is freed once the filter is loaded, but glibc keeps
    freed heap pages; every worker would carry them (about 0.3 MB each, measured
    with benchmarks/memory.py). malloc_trim(3) returns them (brk/madvise, allowed).
    """
    import ctypes

    with contextlib.suppress(AttributeError, OSError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def install_for_child(role: str, mode: bool | str, log: Any) -> None:
    """In a freshly set-up child: install the filter or exit; say what was done."""
    if mode is False:
        log.info("seccomp: off ([daemon] seccomp = false)")
        return
    try:
        count = install(role, mode)
    except SeccompError as exc:
        # Running unfiltered when a filter was asked for would hide the problem.
        log.error("seccomp: %s", exc)
        raise SystemExit(71) from exc
    _trim_heap()
    how = "log only" if mode == "log" else "kill on violation"
    log.debug("seccomp: %s filter installed (%d calls, %s)", role, count, how)
