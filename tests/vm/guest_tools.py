"""Small tools the e2e driver uses inside the guest: kernel clock state, /proc, the control socket.

Kept free of ntpd-py's own modules on purpose: importing them costs ~8 s of
CPU under TCG (pydantic models) on the guest's single vCPU, which the daemon
under test needs. The control-socket client therefore speaks the documented
framing (msgpack ``[schema, type, payload]``) directly, with the schema
version and type codes handed over by the host, which imports
:mod:`ntpd_py.ipc.messages` for them.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CAP_SYS_TIME",
    "CtlCodes",
    "KernelClock",
    "ProcStatus",
    "ctl_status",
    "phc_clock_id",
    "proc_status",
]

CAP_SYS_TIME = 25
ADJ_OFFSET = 0x0001
ADJ_FREQUENCY = 0x0002
ADJ_MAXERROR = 0x0004
ADJ_ESTERROR = 0x0008
ADJ_STATUS = 0x0010
ADJ_OFFSET_SINGLESHOT = 0x8001
ADJ_SETOFFSET = 0x0100
ADJ_NANO = 0x2000
ADJ_TICK = 0x4000
STA_PLL = 0x0001
STA_UNSYNC = 0x0040
NOMINAL_TICK_US = 10_000  # 1e6 / USER_HZ; one µs of tick is 100 ppm


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex, x86_64."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def phc_clock_id(fd: int) -> int:
    """The dynamic POSIX clock id of an open PHC (FD_TO_CLOCKID)."""
    return ctypes.c_int32(((~fd) << 3) | 3).value


class KernelClock:
    """A guest clock as the kernel keeps it: CLOCK_REALTIME, or a PHC by its clock id.

    Only ever used inside the QEMU guest, whose clocks are its own.
    """

    def __init__(self, clock_id: int = 0) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._clock_id = clock_id

    def _adj(self, tx: _Timex) -> _Timex:
        if self._libc.clock_adjtime(self._clock_id, ctypes.byref(tx)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"clock_adjtime: {os.strerror(err)}")
        return tx

    def state(self) -> dict[str, Any]:
        tx = self._adj(_Timex(modes=0))
        return {"freq_ppm": tx.freq / 65536.0, "tick_us": tx.tick, "status": tx.status,
                "unsync": bool(tx.status & STA_UNSYNC),
                "total_ppm": tx.freq / 65536.0 + (tx.tick - NOMINAL_TICK_US) * 100.0}

    def shift(self, offset_ns: int) -> None:
        """Step the clock by `offset_ns` (ADJ_SETOFFSET: exact, whenever it lands)."""
        step = _Timex(modes=ADJ_SETOFFSET | ADJ_NANO)
        step.time.tv_sec, step.time.tv_usec = divmod(offset_ns, 1_000_000_000)
        self._adj(step)

    def reset(self) -> dict[str, Any]:
        """Undo whatever a daemon left: no pending PLL offset or adjtime slew, nominal
        tick, zero freq, unsynchronized. Lets a second daemon start in the same boot
        from the state the first one started from."""
        # the kernel only takes ADJ_OFFSET while STA_PLL is set: set it, zero the
        # PLL's remaining offset, then clear everything
        self._adj(_Timex(modes=ADJ_STATUS, status=STA_PLL))
        self._adj(_Timex(modes=ADJ_OFFSET | ADJ_NANO, offset=0))
        self._adj(_Timex(modes=ADJ_OFFSET_SINGLESHOT, offset=0))
        self._adj(_Timex(modes=ADJ_STATUS | ADJ_FREQUENCY | ADJ_TICK | ADJ_MAXERROR
                         | ADJ_ESTERROR, status=STA_UNSYNC, freq=0, tick=NOMINAL_TICK_US,
                         maxerror=16_000_000, esterror=16_000_000))
        return self.state()

    def detune(self, offset_ns: int, ppm: float, via: str) -> dict[str, Any]:
        """Step by `offset_ns` and make the clock run `ppm` fast (via `tick` or `freq`)."""
        self.shift(offset_ns)
        if via == "tick":
            ticks = round(ppm / 100.0)
            if ticks * 100.0 != ppm:
                raise ValueError("a tick detune must be a multiple of 100 ppm")
            self._adj(_Timex(modes=ADJ_TICK | ADJ_FREQUENCY, tick=NOMINAL_TICK_US + ticks,
                             freq=0))
        else:
            self._adj(_Timex(modes=ADJ_FREQUENCY, freq=round(ppm * 65536)))
        return self.state()


@dataclass(frozen=True)
class ProcStatus:
    pid: int
    name: str
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: tuple[int, ...]
    cap_eff: int
    cap_prm: int
    cap_inh: int
    cap_amb: int
    cap_bnd: int
    no_new_privs: int

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "uids": list(self.uids),
                "gids": list(self.gids), "groups": list(self.groups),
                "CapEff": f"{self.cap_eff:016x}", "CapPrm": f"{self.cap_prm:016x}",
                "CapInh": f"{self.cap_inh:016x}", "CapAmb": f"{self.cap_amb:016x}",
                "CapBnd": f"{self.cap_bnd:016x}", "NoNewPrivs": self.no_new_privs}


def proc_status(pid: int) -> ProcStatus:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def ints(key: str) -> tuple[int, ...]:
        return tuple(int(v) for v in fields.get(key, "").split())

    return ProcStatus(pid, fields["Name"], ints("Uid"), ints("Gid"), ints("Groups"),
                      int(fields["CapEff"], 16), int(fields["CapPrm"], 16),
                      int(fields["CapInh"], 16), int(fields.get("CapAmb", "0"), 16),
                      int(fields["CapBnd"], 16), int(fields.get("NoNewPrivs", "-1")))


@dataclass(frozen=True)
class CtlCodes:
    """The control protocol's schema version and message type codes (from the host)."""

    schema: int
    request: int
    reply: int

    @staticmethod
    def parse(text: str) -> CtlCodes:
        schema, request, reply = (int(v) for v in text.split(","))
        return CtlCodes(schema, request, reply)


def ctl_status(path: str, codes: CtlCodes, timeout_ms: int = 3000) -> dict[str, Any] | None:
    """`ntpctl status` over the control socket: the reply's payload, or None if no answer."""
    import msgpack
    import zmq

    if not os.path.exists(path):
        return None
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.connect("ipc://" + path)
        sock.send(msgpack.packb([codes.schema, codes.request, {"command": "status"}]))
        try:
            frame = sock.recv()
        except zmq.Again:
            return None
    finally:
        sock.close(linger=0)
    version, kind, payload = msgpack.unpackb(frame, raw=False)
    if version != codes.schema or kind != codes.reply or not payload.get("ok"):
        return None
    result: dict[str, Any] = payload
    return result
