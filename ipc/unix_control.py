"""The control socket of `--single-process` mode: plain unix SOCK_SEQPACKET, no ZeroMQ.

One datagram per request and per reply, each an :mod:`ipc.framing` frame.
It offers the same Channel interface as the ZeroMQ control ROUTER (peers are
connection numbers), and `fds()` for the poll-based scheduler. `ntpctl`
recognises it by its socket type (a stream connect fails with EPROTOTYPE).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

__all__ = ["UnixControlServer", "seqpacket_request"]

MAX_FRAME = 1 << 20
MAX_CLIENTS = 16


class UnixControlServer:
    def __init__(self, path: str, mode: int) -> None:
        if os.path.exists(path):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)  # never wider than 0600 between bind and chmod
        try:
            self._listener.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        self._listener.listen(MAX_CLIENTS)
        self._listener.setblocking(False)
        self._clients: dict[bytes, socket.socket] = {}
        self._counter = 0
        self._inbox: list[tuple[bytes, bytes, int | None]] = []
        self._uids: dict[bytes, int | None] = {}
        self._sender_uid: int | None = None
        self.path = path

    def sender_uid(self) -> int | None:
        """The kernel's (SO_PEERCRED) uid of the peer whose frame `recv` returned last."""
        return self._sender_uid

    def fds(self) -> list[int]:
        return [self._listener.fileno(), *(c.fileno() for c in self._clients.values())]

    def _poll_sockets(self) -> None:
        while len(self._clients) < MAX_CLIENTS:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.setblocking(False)
            self._counter += 1
            peer = self._counter.to_bytes(8, "big")
            self._clients[peer] = conn
            self._uids[peer] = _peer_uid(conn)
        for peer, conn in list(self._clients.items()):
            try:
                frame = conn.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                frame = b""
            if not frame:
                conn.close()
                del self._clients[peer]
                self._uids.pop(peer, None)
            else:
                self._inbox.append((peer, frame, self._uids.get(peer)))

    def send(self, frame: bytes, peer: bytes = b"") -> bool:
        conn = self._clients.get(peer)
        if conn is None:
            return False
        try:
            conn.send(frame)
        except OSError:
            return False
        return True

    def recv(self) -> tuple[bytes, bytes] | None:
        if not self._inbox:
            self._poll_sockets()
        if not self._inbox:
            return None
        peer, frame, self._sender_uid = self._inbox.pop(0)
        return peer, frame

    def pending(self) -> bool:
        return bool(self._inbox)

    def pollable(self) -> None:
        return None

    def close(self) -> None:
        for conn in self._clients.values():
            conn.close()
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def seqpacket_request(path: str, frame: bytes, timeout_s: float) -> bytes:
    """One request/reply with a single-process daemon; raises OSError/TimeoutError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.send(frame)
        try:
            return sock.recv(MAX_FRAME)
        except TimeoutError:
            raise
