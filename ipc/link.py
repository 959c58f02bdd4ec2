"""The private link between the supervisor and each child: a SOCK_SEQPACKET socketpair.

It carries heartbeats (child -> supervisor), the process table and source set
(supervisor -> clock-control), and device (re)open requests with the file
descriptor passed back over SCM_RIGHTS (PTP worker <-> supervisor). EOF on it
tells either side that the other is gone. Frames are :mod:`ipc.framing` frames.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection

from .framing import MalformedMessage, decode, encode
from .messages import Message, MsgType

__all__ = ["Link", "LinkClosed", "socketpair"]

MAX_LINK_FRAME = 256 * 1024
# Malformed frames one recv() skips at most: a flood of them must not hold the reader.
MAX_SKIPPED_PER_RECV = 16


class LinkClosed(Exception):
    """The other end of the link has gone away."""


def socketpair() -> tuple[socket.socket, socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setblocking(False)
    child.setblocking(False)
    return parent, child


class Link:
    """One end of a supervisor link; every call is non-blocking."""

    def __init__(self, sock: socket.socket, accept: Collection[MsgType]) -> None:
        self.sock = sock
        self.accept = frozenset(accept)
        self.malformed = 0
        self.dropped = 0  # valid frames the reader refused (over its rate cap)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Message, fds: list[int] | None = None) -> bool:
        frame = encode(message)
        try:
            if fds:
                socket.send_fds(self.sock, [frame], fds)
            else:
                self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        return True

    def recv(self) -> tuple[Message, list[int]] | None:
        """The next valid message and any fds that came with it; None when nothing waits.

        Malformed frames are counted and skipped (their fds closed), at most
        MAX_SKIPPED_PER_RECV per call (then None, as if nothing waited).
        """
        for _ in range(MAX_SKIPPED_PER_RECV):
            try:
                frame, fds, flags, _ = socket.recv_fds(self.sock, MAX_LINK_FRAME, 4)
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionResetError:
                raise LinkClosed() from None
            if not frame and not fds:
                raise LinkClosed()
            try:
                if flags & socket.MSG_TRUNC:
                    raise MalformedMessage("oversized")
                return decode(frame, self.accept, MAX_LINK_FRAME), fds
            except MalformedMessage:
                self.malformed += 1
                for fd in fds:
                    os.close(fd)
        return None

    def close(self) -> None:
        self.sock.close()
