"""PHC device layer: the ioctls and clock reads behind core/ptp_source.py's device actions.

Works on an fd opened read-only (by the supervisor, or by ``open_phc``); needs
no privilege beyond that fd. Buffers are built and decoded by core/phc.py;
this module only issues syscalls and maps errno values to
:class:`PhcError` kinds (core.ptp_events.DeviceErrorKind).

``execute(device, path, action)`` is the whole I/O step a worker loop needs:
it carries out one OpenDevice/ReadDevice/CloseDevice action and returns the
device and the event to feed back into the state machine. ``adopt(path, fd)``
answers the first OpenDevice with an fd the supervisor opened. An unprivileged
worker cannot reopen a root-only /dev/ptpN by itself: after a vanished device
its OpenDevice gets "permission denied" unless the fd comes from the supervisor
again (or the device node is readable by the worker's group).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import re
import stat
import time
from dataclasses import dataclass

from ntpd_py.core import phc
from ntpd_py.core.phc import PhcCaps, PhcReadingRejected, PreciseReading, Reading, ReadMethod
from ntpd_py.core.ptp_events import (
    CloseDevice,
    DeviceErrorKind,
    DeviceFailed,
    DeviceOpened,
    OpenDevice,
    PtpEvent,
    ReadDevice,
    ReadingsRead,
)

__all__ = [
    "PTP_CLOCK_GETCAPS",
    "PTP_SYS_OFFSET",
    "PTP_SYS_OFFSET_EXTENDED",
    "PTP_SYS_OFFSET_PRECISE",
    "DeviceAction",
    "PhcDevice",
    "PhcError",
    "adopt",
    "execute",
    "fd_to_clockid",
    "open_phc",
]


def _ioc(direction: int, nr: int, size: int) -> int:
    """Linux _IOC for the PTP magic '=' (asm-generic layout: dir<<30 | size<<16 | type<<8 | nr)."""
    return direction << 30 | size << 16 | ord("=") << 8 | nr


_WRITE, _READ = 1, 2
PTP_CLOCK_GETCAPS = _ioc(_READ, 1, phc.CAPS_SIZE)  # 0x80503d01
PTP_SYS_OFFSET = _ioc(_WRITE, 5, phc.SYS_OFFSET_SIZE)  # 0x43403d05 (_IOW, yet written back)
PTP_SYS_OFFSET_PRECISE = _ioc(_READ | _WRITE, 8, phc.PRECISE_SIZE)  # 0xc0403d08
PTP_SYS_OFFSET_EXTENDED = _ioc(_READ | _WRITE, 9, phc.EXTENDED_SIZE)  # 0xc4c03d09

_KINDS = {
    errno.ENOENT: DeviceErrorKind.MISSING,
    errno.ENOTTY: DeviceErrorKind.NOT_PTP,
    errno.EACCES: DeviceErrorKind.PERMISSION,
    errno.EPERM: DeviceErrorKind.PERMISSION,
    errno.ENODEV: DeviceErrorKind.VANISHED,
    errno.ENXIO: DeviceErrorKind.VANISHED,
    errno.EOPNOTSUPP: DeviceErrorKind.UNSUPPORTED,
    errno.EBUSY: DeviceErrorKind.BUSY,
    errno.EAGAIN: DeviceErrorKind.BUSY,
}


class PhcError(Exception):
    """A device operation failed; ``kind`` says what the source should do about it."""

    def __init__(self, kind: DeviceErrorKind, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.errno = err

    def event(self) -> DeviceFailed:
        return DeviceFailed(self.kind, str(self), self.errno)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _error(exc: OSError, path: str, doing: str) -> PhcError:
    err = exc.errno or 0
    kind = _KINDS.get(err, DeviceErrorKind.IO)
    name = errno.errorcode.get(err, str(err))
    if kind is DeviceErrorKind.PERMISSION:
        text = f"permission denied: {doing} {path} as user {_user()} ({name})"
    elif kind is DeviceErrorKind.NOT_PTP:
        text = f"{path} is not a PTP clock ({doing}: {name})"
    elif kind is DeviceErrorKind.VANISHED:
        text = f"{path} vanished ({doing}: {name})"
    elif kind is DeviceErrorKind.MISSING:
        text = f"{path} does not exist"
    else:
        text = f"{doing} {path}: {os.strerror(err)} ({name})"
    return PhcError(kind, text, err)


def fd_to_clockid(fd: int) -> int:
    """The dynamic POSIX clock id of a PHC fd: ((~fd) << 3) | 3, as a signed 32-bit clockid_t."""
    clk = ((~fd & 0xFFFFFFFF) << 3 | 3) & 0xFFFFFFFF
    return clk - (1 << 32) if clk & 0x80000000 else clk


@dataclass
class PhcDevice:
    """A PHC behind an open fd. ``path`` is for messages; ``close`` closes the fd."""

    fd: int
    path: str
    resolved_path: str = ""
    device_index: int | None = None
    clock_name: str = ""

    def _ioctl(self, request: int, buf: bytearray, doing: str) -> None:
        try:
            fcntl.ioctl(self.fd, request, buf, True)
        except OSError as exc:
            raise _error(exc, self.path, doing) from None

    def caps(self) -> PhcCaps:
        buf = bytearray(phc.CAPS_SIZE)
        self._ioctl(PTP_CLOCK_GETCAPS, buf, "PTP_CLOCK_GETCAPS on")
        return phc.decode_caps(buf)

    def read(self, method: ReadMethod, n: int) -> list[Reading] | PreciseReading:
        """Take ``n`` readings (integer ns, CLOCK_REALTIME) with ``method``."""
        if method is ReadMethod.PRECISE:
            buf = bytearray(phc.PRECISE_SIZE)
            self._ioctl(PTP_SYS_OFFSET_PRECISE, buf, "PTP_SYS_OFFSET_PRECISE on")
            return phc.decode_precise(buf)
        if method is ReadMethod.EXTENDED:
            buf = phc.encode_extended(n)
            try:
                self._ioctl(PTP_SYS_OFFSET_EXTENDED, buf, "PTP_SYS_OFFSET_EXTENDED on")
            except PhcError as exc:
                if exc.errno == errno.EINVAL:  # kernels that reject the request layout
                    raise PhcError(DeviceErrorKind.UNSUPPORTED, str(exc), exc.errno) from None
                raise
            return phc.decode_extended(buf)
        if method is ReadMethod.BASIC:
            buf = phc.encode_sys_offset(n)
            self._ioctl(PTP_SYS_OFFSET, buf, "PTP_SYS_OFFSET on")
            return phc.decode_sys_offset(buf)
        return self._read_clock_gettime(n)

    def _read_clock_gettime(self, n: int) -> list[Reading]:
        clk = fd_to_clockid(self.fd)
        get, realtime = time.clock_gettime_ns, time.CLOCK_REALTIME
        out = []
        try:
            for _ in range(n):
                before = get(realtime)
                device = get(clk)
                out.append(Reading(before, device, get(realtime)))
        except OSError as exc:
            # a clock id whose fd is gone reads as EINVAL: the device vanished
            if exc.errno == errno.EINVAL:
                exc.errno = errno.ENODEV
            raise _error(exc, self.path, "clock_gettime on") from None
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _sysfs_identity(fd: int) -> tuple[str, int | None, str]:
    """(/dev/ptpN, N, clock_name) for the char device behind ``fd`` via sysfs, when known."""
    st = os.fstat(fd)
    try:
        target = os.readlink(f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    except OSError:
        return "", None, ""
    name = os.path.basename(target)
    match = re.fullmatch(r"ptp(\d+)", name)
    try:
        with open(f"/sys/class/ptp/{name}/clock_name") as f:
            clock_name = f.read().strip()
    except OSError:
        clock_name = ""
    return f"/dev/{name}", int(match.group(1)) if match else None, clock_name


def open_phc(path: str, fd: int | None = None) -> tuple[PhcDevice, PhcCaps]:
    """Open ``path`` read-only (or adopt ``fd``), check it is a PHC, and read its caps."""
    if fd is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _error(exc, path, "opening") from None
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            raise PhcError(
                DeviceErrorKind.NOT_PTP,
                f"{path} is not a PTP clock (not a character device)",
                errno.ENOTTY,
            )
        resolved, index, clock_name = _sysfs_identity(fd)
        device = PhcDevice(fd, path, resolved or os.path.realpath(path), index, clock_name)
        return device, device.caps()
    except BaseException:
        os.close(fd)
        raise


DeviceAction = OpenDevice | ReadDevice | CloseDevice


def adopt(path: str, fd: int | None = None) -> tuple[PhcDevice | None, PtpEvent]:
    """Open ``path`` (or take over ``fd``, e.g. one the supervisor opened) and return the
    device with the event answering OpenDevice. ``fd`` is closed on failure."""
    try:
        device, caps = open_phc(path, fd)
    except PhcError as exc:
        return None, exc.event()
    return device, DeviceOpened(caps, device.resolved_path, device.device_index, device.clock_name)


def execute(
    device: PhcDevice | None, path: str, action: DeviceAction
) -> tuple[PhcDevice | None, PtpEvent | None]:
    """Carry out one device action; return the (new) device and the event to feed back."""
    if isinstance(action, CloseDevice):
        if device is not None:
            device.close()
        return None, None
    if isinstance(action, OpenDevice):
        if device is not None:
            device.close()
        return adopt(path)
    if device is None:
        return None, DeviceFailed(DeviceErrorKind.VANISHED, f"{path} is not open")
    try:
        raw = device.read(action.method, action.count)
    except PhcError as exc:
        return device, exc.event()
    except PhcReadingRejected as exc:
        return device, DeviceFailed(DeviceErrorKind.NONSENSE, f"{path}: {exc}")
    mono, real = time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns()
    readings = raw if isinstance(raw, PreciseReading) else tuple(raw)
    return device, ReadingsRead(action.method, readings, mono, real)
