"""Setting a PPS device's capture edge: the supervisor's part (PPS_SETPARAMS needs CAP_SYS_TIME).

The supervisor opens `/dev/ppsN` as root and calls :func:`set_pps_capture`
before handing the fd to the unprivileged pps worker, which can only read
(PPS_GETCAP, PPS_GETPARAMS, PPS_FETCH). Buffers are core/pps_abi.py's.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable

from ntpd_py.core import pps_abi
from ntpd_py.core.pps_abi import PpsParams

__all__ = ["IoctlFn", "set_pps_capture"]

IoctlFn = Callable[[int, int, bytearray, bool], int]


def _real_ioctl(fd: int, request: int, buf: bytearray, mutate: bool) -> int:
    return int(fcntl.ioctl(fd, request, buf, mutate))


def _getparams(fd: int, ioctl: IoctlFn) -> PpsParams:
    buf = bytearray(pps_abi.KPARAMS_SIZE)
    ioctl(fd, pps_abi.PPS_GETPARAMS, buf, True)
    return pps_abi.decode_params(buf)


def set_pps_capture(fd: int, edge: str, *, ioctl: IoctlFn = _real_ioctl) -> PpsParams:
    """Make the device capture ``edge`` ("assert" or "clear"), keeping its other mode bits.

    Returns the parameters now in force; OSError (EPERM without CAP_SYS_TIME) if they
    cannot be set.
    """
    bit = pps_abi.PPS_CAPTUREASSERT if edge == "assert" else pps_abi.PPS_CAPTURECLEAR
    params = _getparams(fd, ioctl)
    if params.mode & bit:
        return params
    wanted = PpsParams(pps_abi.PPS_API_VERS_1, params.mode | bit | pps_abi.PPS_TSFMT_TSPEC,
                       params.assert_offset_ns, params.clear_offset_ns)
    ioctl(fd, pps_abi.PPS_SETPARAMS, pps_abi.encode_params(wanted), False)
    return _getparams(fd, ioctl)
