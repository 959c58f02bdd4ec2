"""workers/refclock_io.py: the feeder socket (real Unix sockets) and the PPS reader.

This host has no PPS device, so here the reader runs against a double of the ioctl
system call that answers as drivers/pps/pps.c does, and against a real fd that is no
PPS device (/dev/null: the kernel answers ENOTTY). A real kernel PPS device (pps_parport
in the QEMU guest) is read in tests/integration/test_pps_guest.py.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest
from ntpd_py.core import pps_abi
from ntpd_py.core.config import PpsSourceConfig, SockSourceConfig
from ntpd_py.core.pps_source import PpsSource, PpsState, WholeSeconds
from ntpd_py.core.refclock_events import (
    CheckDevice,
    FetchPulse,
    FetchTimedOut,
    PpsDeviceChecked,
    PpsDeviceFailed,
    PpsErrorKind,
    Publish,
    PulseFetched,
)
from ntpd_py.core.refclock_sock import encode_sock_sample
from ntpd_py.core.sock_source import SockSource
from ntpd_py.workers.refclock_io import (
    PpsDevice,
    SockReceiver,
    create_sock_socket,
    set_pps_capture,
)

NS = 1_000_000_000


# -- the feeder socket -----------------------------------------------------------------------------


def test_socket_is_created_with_the_mode_asked_for(tmp_path: Path) -> None:
    path = str(tmp_path / "chrony.ttyS0.sock")
    old = os.umask(0)  # even a permissive caller umask does not widen it
    try:
        sock = create_sock_socket(path, mode=0o620, gid=os.getgid())
    finally:
        os.umask(old)
    try:
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o620
        assert info.st_gid == os.getgid()
        assert sock.type == socket.SOCK_DGRAM and not sock.getblocking()
        assert os.umask(0o022) == 0o022  # the caller's umask is back as it was
    finally:
        sock.close()


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    first = create_sock_socket(path)
    first.close()  # left behind by a previous run
    second = create_sock_socket(path)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(b"x", path)
        sender.close()
        assert second.recv(16) == b"x"
    finally:
        second.close()


@pytest.mark.parametrize("what", ["file", "directory", "symlink"])
def test_anything_but_a_socket_is_left_alone(tmp_path: Path, what: str) -> None:
    path = tmp_path / "s.sock"
    if what == "file":
        path.write_text("precious")
    elif what == "directory":
        path.mkdir()
    else:
        other = tmp_path / "elsewhere.sock"
        create_sock_socket(str(other)).close()
        path.symlink_to(other)
    with pytest.raises(FileExistsError, match="not a socket"):
        create_sock_socket(str(path))
    assert path.exists() or path.is_symlink()
    if what == "file":
        assert path.read_text() == "precious"


def _sock_source() -> SockSource:
    cfg = SockSourceConfig.model_validate({"mode": "sock", "path": "/s", "precision": 1e-3})
    return SockSource(cfg, "sock:/s")


def test_receiver_feeds_the_source_and_bounds_each_wakeup(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    sock = create_sock_socket(path)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver = SockReceiver(sock, _sock_source(), per_wakeup=4, discard=10)
        now = time.clock_gettime_ns(time.CLOCK_REALTIME)
        sender.sendto(encode_sock_sample(now - 100_000_000, 0.002), path)
        sender.sendto(b"\0" * 7, path)
        actions = receiver.on_readable()
        assert [a.sample.offset_s for a in actions if isinstance(a, Publish)] == [0.002]
        assert receiver.source.status().drops == {"wrong-size": 1}
        assert receiver.on_readable() == []  # nothing queued: returns at once
        sender.setblocking(False)
        queued = 0  # as many as the kernel queues (net.unix.max_dgram_qlen, often 10)
        while queued < 1000:
            try:
                sender.sendto(b"junk", path)
            except BlockingIOError:
                break
            queued += 1
        assert queued >= 8
        receiver.discard = 3
        receiver.on_readable()
        assert receiver.source.status().drops["wrong-size"] == 1 + 4
        assert receiver.overflow == 3
        receiver.on_readable()
        decoded = min(4, queued - 7)
        assert receiver.source.status().drops["wrong-size"] == 1 + 4 + decoded
        assert receiver.overflow == 3 + min(3, queued - 7 - decoded)
    finally:
        sender.close()
        sock.close()


# -- the PPS reader ----------------------------------------------------------------------------------


class KernelPps:
    """Answers the PPS ioctls as drivers/pps/pps.c does (assert edges once a second)."""

    def __init__(self, caps: int, mode: int, pulses: list[tuple[int, int]]) -> None:
        self.caps, self.mode = caps, mode
        self.pulses = pulses  # (assert sequence, assert time ns), handed out one per fetch
        self.calls: list[int] = []
        self.timeouts: list[int | None] = []

    def __call__(self, fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        self.calls.append(request)
        if request == pps_abi.PPS_GETCAP:
            buf[:4] = self.caps.to_bytes(4, "little")
        elif request == pps_abi.PPS_GETPARAMS:
            buf[:] = pps_abi.encode_params(pps_abi.PpsParams(1, self.mode))
        elif request == pps_abi.PPS_SETPARAMS:
            self.mode = pps_abi.decode_params(bytes(buf)).mode
        elif request == pps_abi.PPS_FETCH:
            off = pps_abi.OFFSETS["pps_fdata"]["timeout"]
            sec = int.from_bytes(buf[off:off + 8], "little", signed=True)
            nsec = int.from_bytes(buf[off + 8:off + 12], "little")
            flags = int.from_bytes(buf[off + 12:off + 16], "little")
            self.timeouts.append(None if flags & pps_abi.PPS_TIME_INVALID else sec * NS + nsec)
            if not self.pulses:
                raise TimeoutError(110, "Connection timed out")
            seq, at = self.pulses.pop(0)
            buf[0:4] = seq.to_bytes(4, "little")
            buf[8:16] = (at // NS).to_bytes(8, "little", signed=True)
            buf[16:20] = (at % NS).to_bytes(4, "little")
            buf[40:44] = self.mode.to_bytes(4, "little")
        else:
            raise OSError(25, "Inappropriate ioctl for device")
        return 0


def _pps_source() -> PpsSource:
    cfg = PpsSourceConfig.model_validate({"mode": "pps", "path": "/dev/pps0", "precision": 1e-6})
    return PpsSource(cfg, "pps:/dev/pps0")


def test_reader_drives_the_source_to_published_samples() -> None:
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    second = now - now % NS
    # two pulses just past the last local second: the local clock is 30 us ahead
    kernel = KernelPps(pps_abi.PPS_CAPTUREBOTH | pps_abi.PPS_CANWAIT, pps_abi.PPS_CAPTUREASSERT,
                       [(41, second - NS + 30_000), (42, second + 30_000)])
    device = PpsDevice(3, "/dev/pps0", ioctl=kernel)
    src = _pps_source()
    src.update_whole_seconds(WholeSeconds(0.0, 1e-3, "gps"))
    actions = src.start(0)
    samples = []
    for _ in range(4):
        (request,) = [a for a in actions if isinstance(a, CheckDevice | FetchPulse)]
        event = device.execute(request)
        actions = src.handle_event(event, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        samples += [a.sample for a in actions if isinstance(a, Publish)]
    assert [s.offset_s for s in samples] == pytest.approx([-30e-6, -30e-6])
    assert kernel.timeouts == [src.timeout_ns] * 3
    assert src.state is PpsState.NO_SIGNAL  # the third fetch timed out
    assert kernel.calls[:2] == [pps_abi.PPS_GETCAP, pps_abi.PPS_GETPARAMS]


def test_checked_caps_only_claim_the_edges_being_captured() -> None:
    kernel = KernelPps(pps_abi.PPS_CAPTUREBOTH | pps_abi.PPS_CANWAIT, pps_abi.PPS_CAPTUREASSERT,
                       [])
    event = PpsDevice(3, "/dev/pps0", ioctl=kernel).execute(CheckDevice())
    assert isinstance(event, PpsDeviceChecked)
    assert event.caps & pps_abi.PPS_CAPTUREBOTH == pps_abi.PPS_CAPTUREASSERT
    assert set_pps_capture(3, "clear", ioctl=kernel).mode & pps_abi.PPS_CAPTURECLEAR
    event = PpsDevice(3, "/dev/pps0", ioctl=kernel).execute(CheckDevice())
    assert isinstance(event, PpsDeviceChecked)
    assert event.caps & pps_abi.PPS_CAPTUREBOTH == pps_abi.PPS_CAPTUREBOTH


def test_timeout_and_garbled_answers() -> None:
    kernel = KernelPps(pps_abi.PPS_CANWAIT, 1, [(1, 5 * NS)])
    device = PpsDevice(3, "/dev/pps0", ioctl=kernel)
    assert isinstance(device.execute(FetchPulse(NS)), PulseFetched)
    assert device.execute(FetchPulse(NS)) == FetchTimedOut()

    def garbled(fd: int, request: int, buf: bytearray, mutate: bool) -> int:
        buf[16:20] = (2 * NS).to_bytes(4, "little")  # nsec beyond a second
        return 0

    event = PpsDevice(3, "/dev/pps0", ioctl=garbled).execute(FetchPulse(NS))
    assert isinstance(event, PpsDeviceFailed) and event.kind is PpsErrorKind.NONSENSE


def test_a_real_fd_that_is_no_pps_device_is_refused_by_the_kernel() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for action in (CheckDevice(), FetchPulse(NS)):
            event = PpsDevice(fd, "/dev/null").execute(action)
            assert isinstance(event, PpsDeviceFailed), event
            assert event.kind is PpsErrorKind.NOT_PPS and "not a PPS device" in event.message
    finally:
        os.close(fd)
    src = _pps_source()
    src.start(0)
    src.handle_event(PpsDeviceFailed(PpsErrorKind.NOT_PPS, "x"), 0)
    assert src.state is PpsState.FAILED
