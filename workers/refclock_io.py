"""I/O behind the sock and PPS sources: the feeder's socket and the PPS device's ioctls.

These are the pieces the sock worker (workers/sock.py) and the supervisor call.

- :func:`create_sock_socket` (plumbing/feeder_socket.py, re-exported here) is
  what the supervisor calls for a `mode = "sock"` source: it makes the Unix
  datagram socket the feeder (gpsd) writes to, removing a stale one only if it
  *is* a socket, binding under a restrictive umask, then setting mode and group.
- :class:`SockReceiver` drains that socket with bounded work per wake-up and feeds
  core/sock_source.py; what the source refuses is counted there, per reason.
- :class:`PpsDevice` answers core/pps_source.py's device actions with PPS_GETCAP
  and PPS_FETCH (with a timeout) on an fd passed in; buffers are core/pps_abi.py's.
  :func:`set_pps_capture` is for the supervisor: PPS_SETPARAMS needs CAP_SYS_TIME.
- :class:`PpsPoller` carries a fetch out as polls, so the pps worker never blocks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable

from ntpd_py.core import pps_abi
from ntpd_py.core.pps_abi import PpsParams, PpsTimeInvalid
from ntpd_py.core.refclock_events import (
    CheckDevice,
    FetchPulse,
    FetchTimedOut,
    PpsDeviceChecked,
    PpsDeviceFailed,
    PpsErrorKind,
    PpsEvent,
    PulseFetched,
    SockAction,
)
from ntpd_py.core.sock_source import SockSource
from ntpd_py.plumbing.feeder_socket import create_sock_socket
from ntpd_py.plumbing.pps_capture import set_pps_capture

__all__ = [
    "DISCARD_PER_WAKEUP",
    "RECEIVE_PER_WAKEUP",
    "IoctlFn",
    "PpsDevice",
    "PpsPoller",
    "SockReceiver",
    "create_sock_socket",
    "set_pps_capture",
]

RECEIVE_PER_WAKEUP = 16  # datagrams decoded per wake-up (gpsd sends one or two a second)
DISCARD_PER_WAKEUP = 256  # beyond them, at most this many are read and thrown away
_RECV_BUFFER = 128  # larger than any SOCK sample: a longer datagram shows as wrong-size


class SockReceiver:
    """Reads a feeder's datagrams into a :class:`SockSource`, a bounded amount per wake-up.

    Up to RECEIVE_PER_WAKEUP datagrams are decoded; if more are queued, up to
    DISCARD_PER_WAKEUP more are read and thrown away unread (``overflow``), so
    a flood can neither keep the loop busy nor leave good samples to go stale
    behind it. Clocks are read once per wake-up: the source maps each sample's
    own stamp to CLOCK_MONOTONIC through that pair.
    """

    def __init__(self, sock: socket.socket, source: SockSource, *,
                 per_wakeup: int = RECEIVE_PER_WAKEUP,
                 discard: int = DISCARD_PER_WAKEUP) -> None:
        self.sock = sock
        self.source = source
        self.per_wakeup = per_wakeup
        self.discard = discard
        self.overflow = 0  # datagrams read and thrown away undecoded

    def on_readable(self) -> list[SockAction]:
        mono_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        actions: list[SockAction] = []
        for _ in range(self.per_wakeup):
            data = self._recv()
            if data is None:
                return actions
            actions += self.source.handle_datagram(data, mono_ns, real_ns)
        for _ in range(self.discard):
            if self._recv() is None:
                break
            self.overflow += 1
        return actions

    def _recv(self) -> bytes | None:
        try:
            return self.sock.recv(_RECV_BUFFER)
        except (BlockingIOError, InterruptedError):
            return None


IoctlFn = Callable[[int, int, bytearray, bool], int]

_ERRNO_KINDS = {
    errno.ENOTTY: PpsErrorKind.NOT_PPS,
    errno.EINVAL: PpsErrorKind.NOT_PPS,
    errno.ENODEV: PpsErrorKind.VANISHED,
    errno.ENXIO: PpsErrorKind.VANISHED,
}


def _real_ioctl(fd: int, request: int, buf: bytearray, mutate: bool) -> int:
    return int(fcntl.ioctl(fd, request, buf, mutate))


class PpsDevice:
    """A PPS device on an fd the caller owns; ``execute`` turns one action into one event.

    ``ioctl`` is the system call (unit tests pass a double that answers as the kernel
    does; tests/integration/test_pps_guest.py reads a real device in the QEMU guest).
    """

    def __init__(self, fd: int, path: str, *, ioctl: IoctlFn = _real_ioctl) -> None:
        self.fd = fd
        self.path = path
        self._ioctl = ioctl

    def getcap(self) -> int:
        buf = bytearray(pps_abi.GETCAP_SIZE)
        self._ioctl(self.fd, pps_abi.PPS_GETCAP, buf, True)
        return pps_abi.decode_getcap(buf)

    def getparams(self) -> PpsParams:
        buf = bytearray(pps_abi.KPARAMS_SIZE)
        self._ioctl(self.fd, pps_abi.PPS_GETPARAMS, buf, True)
        return pps_abi.decode_params(buf)

    def fetch(self, timeout_ns: int) -> pps_abi.PpsFetch:
        """Wait up to ``timeout_ns`` for the next edge (TimeoutError if none came)."""
        buf = pps_abi.encode_fetch(timeout_ns)
        while True:
            try:
                self._ioctl(self.fd, pps_abi.PPS_FETCH, buf, True)
            except InterruptedError:  # a signal, not the device: wait again
                continue
            return pps_abi.decode_fetch(buf)

    def execute(self, action: CheckDevice | FetchPulse) -> PpsEvent:
        """Carry out one device action of core/pps_source.py and return its answer."""
        try:
            if isinstance(action, CheckDevice):
                caps = self.getcap()
                mode = self.getparams().mode
                # the capture mode is set by the supervisor (PPS_SETPARAMS needs
                # CAP_SYS_TIME): report the edges actually being captured
                captured = mode & pps_abi.PPS_CAPTUREBOTH
                return PpsDeviceChecked((caps & ~pps_abi.PPS_CAPTUREBOTH) | (caps & captured))
            fetched = self.fetch(action.timeout_ns)
            mono_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            real_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
            return PulseFetched(fetched, mono_ns, real_ns)
        except TimeoutError:
            return FetchTimedOut()
        except PpsTimeInvalid as exc:
            return PpsDeviceFailed(PpsErrorKind.NONSENSE, f"{self.path}: {exc}")
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                return FetchTimedOut()
            kind = _ERRNO_KINDS.get(exc.errno or 0, PpsErrorKind.IO)
            what = "PPS_GETCAP" if isinstance(action, CheckDevice) else "PPS_FETCH"
            text = f"{what} on {self.path}: {os.strerror(exc.errno or 0)}"
            if kind is PpsErrorKind.NOT_PPS:
                text = f"{self.path} is not a PPS device ({what}: {os.strerror(exc.errno or 0)})"
            return PpsDeviceFailed(kind, text)


POLLS_PER_PERIOD = 8  # looks for a new edge this often per period (the kernel stamps it)
MIN_POLL_NS = 10_000_000


class PpsPoller:
    """Carries out the source's FetchPulse without blocking the worker's loop.

    The source asks for the next pulse as soon as one is answered, so a blocking
    PPS_FETCH would keep the worker in the ioctl nearly all the time (no bus, no
    link, late heartbeats). Instead: :meth:`begin` notes the edge sequence numbers
    with a zero-timeout PPS_FETCH (drivers/pps/pps.c does not wait when the timeout
    is zero: it returns the latest edges), then :meth:`poll`, called at
    ``next_poll_ns``, fetches again: a moved sequence number is the pulse asked for
    (PulseFetched, its kernel stamp unaffected by when we looked) and the action's
    timeout passing without one is FetchTimedOut, as a blocking fetch would answer.
    """

    def __init__(self, device: PpsDevice, period_ns: int) -> None:
        self.device = device
        self.poll_ns = max(period_ns // POLLS_PER_PERIOD, MIN_POLL_NS)
        self._seqs: tuple[int, int] | None = None
        self._deadline_ns: int | None = None
        self.next_poll_ns: int | None = None  # None: no fetch outstanding

    def begin(self, action: FetchPulse, now_mono_ns: int) -> PpsEvent | None:
        """Start waiting for the next edge; an event at once only if the device failed."""
        self._deadline_ns = now_mono_ns + action.timeout_ns
        self.next_poll_ns = now_mono_ns + self.poll_ns
        event = self.device.execute(FetchPulse(0))
        if isinstance(event, PulseFetched):
            self._seqs = (event.fetch.assert_sequence, event.fetch.clear_sequence)
            return None
        if isinstance(event, FetchTimedOut):
            self._seqs = None  # nothing captured yet: any edge is new
            return None
        self.next_poll_ns = None
        return event

    def poll(self, now_mono_ns: int) -> PpsEvent | None:
        """The answer to the outstanding fetch, or None while there is none yet."""
        if self.next_poll_ns is None or self._deadline_ns is None:
            return None
        event = self.device.execute(FetchPulse(0))
        if isinstance(event, PulseFetched):
            seqs = (event.fetch.assert_sequence, event.fetch.clear_sequence)
            if seqs != self._seqs:
                self.next_poll_ns = None
                return event
        elif not isinstance(event, FetchTimedOut):
            self.next_poll_ns = None
            return event
        if now_mono_ns >= self._deadline_ns:
            self.next_poll_ns = None
            return FetchTimedOut()
        self.next_poll_ns = now_mono_ns + self.poll_ns
        return None
