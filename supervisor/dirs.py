"""Directories the daemon needs: create what is missing, never take over what exists.

A directory the supervisor creates gets the owner and mode it asks for. An
existing one is used as it is when it is safe — owned by root or by the
daemon's user, and writable by nobody else unless that is exactly the owner
and mode the supervisor would have given it — and otherwise refused, naming
the path, the configuration key and what is unsafe. The supervisor never
chowns or chmods a directory it did not create: `observation-path =
"/tmp/observe"` must not lock every other user out of /tmp.

A shared sticky directory (such as /tmp: root-owned, world-writable, sticky)
is accepted as the parent of the observation socket only; it is left alone.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["DirectoryError", "ensure_dir", "is_shared_sticky", "problem_with"]

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class DirectoryError(Exception):
    """A directory cannot be created, or an existing one is unsafe to use."""


def is_shared_sticky(st: os.stat_result) -> bool:
    """Root-owned, world-writable and sticky: /tmp, /var/tmp, /dev/shm."""
    mode = st.st_mode
    return st.st_uid == 0 and bool(mode & stat.S_ISVTX) and bool(mode & stat.S_IWOTH)


def _describe(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid}, group gid {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}"


def problem_with(
    st: os.stat_result, owner: tuple[int, int], mode: int, allow_shared: bool = False
) -> str | None:
    """Why an existing directory with status `st` is unsafe, or None when it is safe."""
    if not stat.S_ISDIR(st.st_mode):
        return "exists and is not a directory"
    if allow_shared and is_shared_sticky(st):
        return None
    uid, gid = owner
    actual = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, uid):
        return (f"is owned by uid {st.st_uid}, not by root or the daemon's user (uid {uid}) "
                f"({_describe(st)})")
    exact = (st.st_uid, st.st_gid, actual) == (uid, gid, mode)
    if actual & _OTHERS_WRITE and not exact:
        who = "every user" if actual & stat.S_IWOTH else f"group gid {st.st_gid}"
        return f"is writable by {who} ({_describe(st)})"
    return None


def ensure_dir(
    path: str, key: str, owner: tuple[int, int], mode: int, allow_shared: bool = False,
    value: str | None = None,
) -> bool:
    """Create `path` with `owner` and `mode` if it is missing; check it if it exists.

    Returns True when this call created it. Missing parents are created
    root-only-writable (0755, owned by the caller). Raises DirectoryError with
    a message naming `key` and its `value` (when the directory is not the
    value itself but holds it, as for observation-path's socket) and the path.
    """
    where = f'{key} = "{path}"' if value is None else f'{key} = "{value}": its directory {path}'
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DirectoryError(f"{where}: cannot check the directory: {exc.strerror}") from None
    if st is not None:
        problem = problem_with(st, owner, mode, allow_shared)
        if problem is not None:
            raise DirectoryError(
                f"{where}: refusing to use this existing directory: it {problem}; ntpd-py "
                f"does not change directories it did not create: fix it (for example chown "
                f"root or the daemon's user, chmod go-w) or choose another {key}"
            )
        return False
    try:
        parent = os.path.dirname(path.rstrip("/"))
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
        old_umask = os.umask(0o077)  # never visible with wider bits than asked for
        try:
            os.mkdir(path, 0o700)
        finally:
            os.umask(old_umask)
        # chmod while it is still ours (no CAP_FOWNER needed: the unit's bounding set
        # lacks it), then give it away; nobody else could see it before.
        os.chmod(path, mode)
        if owner != (os.geteuid(), os.getegid()):
            os.chown(path, *owner)
    except FileExistsError:
        # Created meanwhile by someone else: check it like any existing directory.
        return ensure_dir(path, key, owner, mode, allow_shared, value)
    except OSError as exc:
        hint = f"set {key} to a directory you may create"
        if exc.errno == errno.EROFS:
            # Typically systemd's ProtectSystem=strict: only listed paths are writable.
            hint = (f"the file system is read-only for this process; under systemd "
                    f"(ProtectSystem=strict) add the directory to ReadWritePaths= with "
                    f"`systemctl edit ntpd-py` (the shipped unit allows /run/ntpd-py and "
                    f"/run/ntpd-rs), or {hint}")
        raise DirectoryError(
            f"{where}: cannot create the directory: {exc.strerror}; {hint}"
        ) from None
    return True
