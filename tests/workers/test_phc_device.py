"""workers/_phc.py on the host (no PHC needed): ioctl numbers, clock ids, error mapping."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from ntpd_py.core.phc import ReadMethod
from ntpd_py.core.ptp_events import (
    CloseDevice,
    DeviceErrorKind,
    DeviceFailed,
    OpenDevice,
    ReadDevice,
)
from ntpd_py.workers import _phc
from ntpd_py.workers._phc import PhcError, execute, fd_to_clockid, open_phc


def test_ioctl_numbers_are_the_verified_ones() -> None:
    # values checked with gcc against linux-libc-dev 6.1 (peers-and-kernel-abi.md §1)
    assert _phc.PTP_CLOCK_GETCAPS == 0x80503D01
    assert _phc.PTP_SYS_OFFSET == 0x43403D05
    assert _phc.PTP_SYS_OFFSET_PRECISE == 0xC0403D08
    assert _phc.PTP_SYS_OFFSET_EXTENDED == 0xC4C03D09


def test_fd_to_clockid_matches_linuxptp() -> None:
    # FD_TO_CLOCKID(fd) = ((~fd) << 3) | 3 as a C int; CLOCKID_TO_FD(clk) = ~(clk >> 3)
    for fd in (0, 3, 7, 1000):
        clk = fd_to_clockid(fd)
        assert clk == ((~fd) << 3) | 3 and clk < 0
        assert ~(clk >> 3) == fd


def test_not_a_ptp_clock_char_device() -> None:
    with pytest.raises(PhcError) as info:
        open_phc("/dev/null")
    assert info.value.kind is DeviceErrorKind.NOT_PTP and info.value.errno == errno.ENOTTY
    assert "/dev/null is not a PTP clock" in str(info.value)


def test_not_a_ptp_clock_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "ptp0"
    path.write_text("")
    with pytest.raises(PhcError) as info:
        open_phc(str(path))
    assert info.value.kind is DeviceErrorKind.NOT_PTP and "not a character device" in str(
        info.value)


def test_missing_path() -> None:
    device, event = execute(None, "/dev/ptp-does-not-exist", OpenDevice())
    assert device is None and isinstance(event, DeviceFailed)
    assert event.kind is DeviceErrorKind.MISSING
    assert event.message == "/dev/ptp-does-not-exist does not exist"


def test_no_fd_leak_on_failed_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        execute(None, "/dev/null", OpenDevice())
    assert len(os.listdir("/proc/self/fd")) == before


def test_read_without_device_and_close_are_safe() -> None:
    assert execute(None, "/dev/ptp0", CloseDevice()) == (None, None)
    device, event = execute(None, "/dev/ptp0", ReadDevice(ReadMethod.BASIC, 5))
    assert device is None and isinstance(event, DeviceFailed)
    assert event.kind is DeviceErrorKind.VANISHED


def _in_child_as_nobody(path: str) -> str:
    """Open ``path`` in a child running as uid/gid 65534; return what it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, try, report, exit without cleanup handlers
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                open_phc(path)
                text = "opened"
            except PhcError as exc:
                text = f"{exc.kind}|{exc}"
            os.write(write_end, text.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_permission_denied_names_path_and_user(tmp_path: Path) -> None:
    path = tmp_path / "ptp-private"
    path.write_text("")
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    kind, _, message = _in_child_as_nobody(str(path)).partition("|")
    assert kind == DeviceErrorKind.PERMISSION
    assert str(path) in message and "as user nobody" in message and "EACCES" in message
