"""`<runtime-dir>/bus/supervisor.pid`: how `ntpctl` tells "not running" from "restarting".

It lives in `bus/`, the supervisor's own directory, because under the systemd
unit root has no CAP_DAC_OVERRIDE and cannot write in the runtime directory,
which belongs to clock-control's user; without a `bus/` directory
(`--single-process`) it lives in the runtime directory itself.

The supervisor writes its pid there at start (atomically: a temporary file
renamed over it) and removes it at exit. When the control socket does not
answer, `ntpctl` reads it: a live ntpd-py process that owns the file means the
daemon runs and only clock-control (which serves the socket) is down — being
restarted, or crash-looping — which is exit 75, not 69.

Anyone who can write the runtime directory could write this file, so it is
believed only when the file's owner is the process's owner and that process
runs ntpd-py: a worker (another uid than the root supervisor) cannot make
ntpctl vouch for itself. It only ever changes a message and an exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = ["PIDFILE_NAME", "remove_pidfile", "supervisor_pid", "write_pidfile"]

PIDFILE_NAME = "supervisor.pid"
_NAMES = (b"ntpd-py", b"ntpd_py")  # the script, or python -m ntpd_py...


def _path(runtime_dir: str) -> str:
    own = os.path.join(runtime_dir, "bus")
    return os.path.join(own if os.path.isdir(own) else runtime_dir, PIDFILE_NAME)


def write_pidfile(runtime_dir: str, log: logging.Logger | None = None) -> bool:
    """Write our pid (mode 0644, atomically); False, logged, if the directory refuses it."""
    path = _path(runtime_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fchmod(fd, 0o644)  # readable by ntpctl whatever the umask
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if log is not None:
            log.warning("cannot write %s: %s; ntpctl will say \"not running\" while "
                        "clock-control restarts", path, exc.strerror)
        return False
    return True


def remove_pidfile(runtime_dir: str) -> None:
    """Remove the file if it still names us (a newer supervisor's file is left alone)."""
    path = _path(runtime_dir)
    with contextlib.suppress(OSError, ValueError):
        with open(path, "rb") as handle:
            named = int(handle.read(32).strip() or b"0")
        if named == os.getpid():
            os.unlink(path)


def supervisor_pid(runtime_dir: str) -> int | None:
    """The pid of the live ntpd-py supervisor the file names, or None (no file, unreadable,
    dead, not ntpd-py, or a file its process does not own)."""
    path = _path(runtime_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        owner = os.fstat(fd).st_uid
        pid = int(os.read(fd, 32).strip() or b"0")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if pid <= 1:
        return None
    try:
        process_owner = os.stat(f"/proc/{pid}").st_uid
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read(4096)
    except OSError:
        return None  # gone (or another pid namespace)
    if process_owner != owner or not any(name in cmdline for name in _NAMES):
        return None
    return pid
