"""What an attacker does in the adversarial tests, in one place per capability.

`bus_as(daemon, worker_id)` is the one way these tests reach clock-control's sample
bus as a given worker: a DEALER on that worker's private endpoint
`<runtime-dir>/bus/<n>.sock` (owned by the worker's uid; the test, as root, may
connect to any), with that worker's routing id.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator
from typing import Any

import psutil
from ntpd_py.core.nts_cookies import ServerKeySet

from tests.integration.daemon import Daemon


def phc_config(*paths: str, source_extra: str = "", sync_extra: str = "",
               tables: str = "") -> str:
    """A daemon configuration with simulated PHCs at `paths` (default /dev/ptp0) that
    synchronizes on one source; `source_extra` goes into each [[source]], `sync_extra`
    into [synchronization], `tables` before it."""
    sources = "".join(f'\n[[source]]\nmode = "ptp"\npath = "{path}"\n{source_extra}'
                      "precision = 5e-8\n" for path in paths or ("/dev/ptp0",))
    return f"{sources}{tables}\n[synchronization]\nminimum-agreeing-sources = 1\n{sync_extra}"


SIM_PTP = phc_config()


def nts_server_daemon(port: int, server_extra: str = "") -> tuple[Daemon, ServerKeySet]:
    """A daemon (simulated PHC) serving NTP and NTS on 127.0.0.1:`port`, and the keyset it
    loads from its key-storage-path, so that the caller can mint cookies as an NTS-KE
    server would. `server_extra`: more keys for the [[server]] table."""
    daemon = Daemon("")
    key_path = daemon.dir / "nts-keys"
    keyset = ServerKeySet.generate(os.urandom, time.time_ns())
    key_path.write_bytes(keyset.to_bytes())
    key_path.chmod(0o600)
    daemon.write_config(phc_config(tables=f'[[server]]\nlisten = "127.0.0.1:{port}"\n'
                                          f'{server_extra}'
                                          f'[keyset]\nkey-storage-path = "{key_path}"\n'))
    return daemon, keyset

SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438


def endpoint_of(daemon: Daemon, pid: int) -> str:
    """The private bus endpoint of the worker running as `pid` (the one its uid owns)."""
    uid = psutil.Process(pid).uids().real
    owned = [p for p in (daemon.runtime / "bus").glob("*.sock") if p.stat().st_uid == uid]
    assert len(owned) == 1, f"one endpoint for uid {uid}: {owned}"
    return str(owned[0])


@contextlib.contextmanager
def bus_as(daemon: Daemon, worker_id: str, hwm: int = 100_000,
           via: str | None = None) -> Iterator[Any]:
    """A zmq socket on the bus endpoint of worker `via` (default: `worker_id`) that
    claims to be `worker_id` (routing id); send frames on it.

    The `via` worker is killed first (what a compromised worker holding its uid can
    do to its own process) and its endpoint used during the restart backoff.
    Clock-control hears the frames as `via`, whatever they claim.
    """
    import signal

    import zmq

    via = via or worker_id
    document = daemon.wait_running([via], timeout=15)  # perhaps back from an earlier kill
    pid = next(p["pid"] for p in document["processes"] if p["worker_id"] == via)
    path = endpoint_of(daemon, pid)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)  # let the bus notice the old connection is gone
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, worker_id.encode())
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"ipc://{path}")
    try:
        time.sleep(0.1)  # let the connection come up before the first frame
        yield sock
    finally:
        sock.close(linger=2000)
        ctx.term()


@contextlib.contextmanager
def state_feed(daemon: Daemon) -> Iterator[Any]:
    """A SUB on clock-control's published state (sample counts without asking ntpctl)."""
    import zmq
    from ntpd_py.ipc.endpoints import connect_sub

    ctx = zmq.Context()
    channel = connect_sub(ctx, str(daemon.runtime / "state.sock"))
    try:
        yield channel
    finally:
        channel.close()
        ctx.term()


def latest_state(channel: Any, timeout: float = 3.0) -> Any:
    """The newest ClockStateMsg on the feed (waits for one up to `timeout`)."""
    from ntpd_py.ipc.framing import decode
    from ntpd_py.ipc.messages import MsgType

    deadline = time.monotonic() + timeout
    latest = None
    while time.monotonic() < deadline:
        item = channel.recv()
        if item is None:
            if latest is not None:
                return latest
            time.sleep(0.05)
            continue
        latest = decode(item[1], {MsgType.CLOCK_STATE}, max_size=1 << 20)
    return latest


def samples_in(state: Any, source_id: str) -> int:
    for view in state.sources:
        if view.source_id == source_id:
            return int(view.samples)
    raise AssertionError(f"{source_id} not in the published state")


def steal_fd(pid: int, target_fd: int) -> int:
    """A copy of `target_fd` of process `pid` (pidfd_open + pidfd_getfd; needs root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pidfd = libc.syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), f"pidfd_open({pid})")
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(target_fd),
                          ctypes.c_uint(0))
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"pidfd_getfd({pid}, {target_fd})")
        return int(fd)
    finally:
        os.close(pidfd)


def seqpacket_fds(pid: int) -> list[int]:
    """The fds of `pid` that are unix SOCK_SEQPACKET sockets (a child's supervisor link)."""
    import socket

    found = []
    for entry in psutil.Process(pid).net_connections(kind="unix"):
        if entry.type == socket.SOCK_SEQPACKET and entry.fd >= 0:
            found.append(entry.fd)
    return found


class CpuMeter:
    """CPU share of one process over an interval (user + system time / wall time)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self._start()

    def _start(self) -> None:
        times = self.proc.cpu_times()
        self.t0 = times.user + times.system
        self.w0 = time.monotonic()

    def percent(self) -> float:
        times = self.proc.cpu_times()
        return 100.0 * (times.user + times.system - self.t0) / max(1e-6,
                                                                  time.monotonic() - self.w0)


def load_pids(daemon: Daemon, workers: dict[str, str] | None = None,
              document: dict[str, Any] | None = None) -> dict[str, int]:
    """Pids to measure (tests/adversarial/load.py): the supervisor, clock-control, and
    each of `workers` ({label: worker_id}) — from `document` (a status) or a fresh one."""
    if document is None:
        document = daemon.status() or {}
    running = {p["worker_id"]: p["pid"] for p in document.get("processes", []) if p.get("pid")}
    pids = {"supervisor": daemon.pid}
    for label, worker_id in {"clock-control": "clock-control", **(workers or {})}.items():
        if worker_id in running:
            pids[label] = int(running[worker_id])
    return pids
