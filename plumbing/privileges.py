"""Dropping privileges in a freshly forked child: uid/gid, capabilities, no_new_privs.

Written against the kernel ABI with ctypes (prctl, capset) rather than a
third-party library: the calls are few and stable, and python-prctl is
unmaintained. libc is reached through ``CDLL(None)`` so LD_PRELOAD
interposers see the calls.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal
from dataclasses import dataclass

__all__ = [
    "CAP_SYS_TIME",
    "Identity",
    "PrivilegeError",
    "bounding_has",
    "drop_privileges",
    "effective_caps",
    "lookup_identity",
    "set_parent_death_signal",
]

CAP_SYS_TIME = 25
CAP_LAST_CAP_FALLBACK = 40

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_NAME = 15
LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class PrivilegeError(Exception):
    """Dropping privileges failed; the child must not continue."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Identity:
    user: str
    group: str
    uid: int
    gid: int
    # Supplementary groups after the drop; None: just `gid` (the configured user).
    groups: tuple[int, ...] | None = None


def lookup_identity(user: str, group: str) -> Identity:
    """Resolve the configured user and group, or say how to create them."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise PrivilegeError(
            f"user {user!r} does not exist: create it with "
            f"`systemd-sysusers deploy/sysusers.d/ntpd-py.conf` (or "
            f"`useradd --system --no-create-home --shell /usr/sbin/nologin {user}`), "
            "or set [daemon] user/group to an existing unprivileged account"
        ) from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(
            f"group {group!r} does not exist: create it with `groupadd --system {group}` "
            "(deploy/sysusers.d/ntpd-py.conf creates it too)"
        ) from None
    return Identity(user, group, uid, gid)


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    result: int = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if result < 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"prctl({option}) failed: {os.strerror(err)}")
    return result


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return CAP_LAST_CAP_FALLBACK


def bounding_has(cap: int) -> bool:
    """Whether `cap` is in this process's capability bounding set."""
    return bool(_prctl(PR_CAPBSET_READ, cap))


def effective_caps() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _capset(keep: int | None) -> None:
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if keep is not None:
        data[keep // 32].effective = 1 << (keep % 32)
        data[keep // 32].permitted = 1 << (keep % 32)
    if _libc.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        raise PrivilegeError(f"capset failed: {os.strerror(ctypes.get_errno())}")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the supervisor (re-armed after setuid, which clears it)."""
    _prctl(PR_SET_PDEATHSIG, sig)


def set_process_name(name: str) -> None:
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, buf, 0, 0, 0)


def drop_privileges(identity: Identity, keep_cap: int | None) -> None:
    """Become `identity` with no capabilities (or only `keep_cap`) and no_new_privs.

    Must run as root in a single-threaded child. Order matters: the bounding
    set can only shrink while we still hold CAP_SETPCAP; KEEPCAPS lets a kept
    capability survive the uid change; capset then trims to exactly it.
    """
    for cap in range(_last_cap() + 1):
        if cap != keep_cap and bounding_has(cap):
            _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if keep_cap is not None:
        _prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups(list(identity.groups) if identity.groups is not None else [identity.gid])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    _capset(keep_cap)
    if keep_cap is not None:
        _prctl(PR_SET_KEEPCAPS, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PrivilegeError("still root after dropping privileges")
    expected = 0 if keep_cap is None else 1 << keep_cap
    if effective_caps() != expected:
        raise PrivilegeError(f"capabilities not as expected: CapEff={effective_caps():#x}")
