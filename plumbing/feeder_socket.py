"""The Unix datagram socket a reference-clock feeder (gpsd) writes to: made by the supervisor.

Process mechanics, used by the supervisor (which creates the socket as root,
before the sock worker exists, and hands its fd over) and by tests: the worker
itself never binds anything (its system-call profile has no bind).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

__all__ = ["create_sock_socket"]

_SOCKET_BINDING_UMASK = 0o177  # the socket exists with at most 0600 until chmod


def create_sock_socket(path: str, *, mode: int = 0o660, gid: int | None = None) -> socket.socket:
    """Bind a Unix datagram socket at ``path`` for a feeder, with ``mode`` (and group ``gid``).

    A socket left at ``path`` by an earlier run is removed; anything else there
    (a file, a directory, a symlink) is refused with FileExistsError, so a
    misconfigured path cannot delete what is not ours. The process umask is
    tightened only around bind (the supervisor is single-threaded when it calls this).
    """
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(existing.st_mode):
            raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; not "
                                  "removing it", path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        old_umask = os.umask(_SOCKET_BINDING_UMASK)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
