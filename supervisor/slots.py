"""Worker slots: the credentials and the private bus endpoint of each child but clock-control.

Identity by construction. Each worker slot gets

- a uid of its own (as root), taken from ``[daemon] worker-uid-range`` among the
  uids that have no passwd entry and that no running process uses, kept across
  restarts of that worker and released when a reload removes it, so that no
  worker can signal, ptrace or impersonate another; and
- a listening unix socket ``<runtime-dir>/bus/<n>.sock`` that the supervisor
  binds (under umask 077) and hands to clock-control, owned by the slot's uid
  with mode 0600, so only that worker (and root) can connect to it. The sender
  of a frame is the slot it arrived on, never a name the sender chose.

Before a slot's worker is (re)started, every process still running as the slot's
uid is killed, so leftovers of a compromised worker cannot linger on its endpoint.
Without root there are no uids to hand out; the per-slot endpoints remain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ntpd_py.ipc.endpoints import Endpoints
from ntpd_py.ipc.messages import BusSlot
from ntpd_py.plumbing.privileges import Identity

__all__ = [
    "Slot", "SlotTable", "UidClaim", "allocate_uid", "kill_uid", "process_uids", "running_uids",
]

BUS_ROLES = ("ptp", "ntp", "server", "sock", "pps", "nts-ke")
LISTEN_BACKLOG = 16


class SlotError(Exception):
    """A slot's uid or endpoint could not be set up."""


def _has_passwd_entry(uid: int) -> bool:
    """Whether any NSS source (files, systemd, LDAP ...) names `uid`, asked of getent(1).

    Not pwd.getpwuid: a uid that files do not know is passed on to the next NSS
    module, which glibc then loads into the supervisor for good (libnss_systemd:
    0.3 MB private, inherited by every worker forked after it). A short getent
    process asks the same question and takes the modules with it.
    """
    import subprocess

    try:
        done = subprocess.run(["getent", "passwd", str(uid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlotError(f"cannot ask getent(1) whether uid {uid} has a passwd entry: "
                        f"{exc}") from None
    if done.returncode not in (0, 2):  # getent: 0 found, 2 not found
        raise SlotError(f"getent passwd {uid} failed with status {done.returncode}")
    return done.returncode == 0


def process_uids() -> Iterator[tuple[int, tuple[int, ...]]]:
    """(pid, (real, effective, saved, filesystem uid)) of every process, read from /proc.

    Read directly rather than through ``psutil.process_iter``: that keeps a Process
    object per process of the host in a module cache, and walking it before each
    fork (see :func:`kill_uid`) left every child about 0.5 MB more private memory
    (4.5 MB for the tree, measured with benchmarks/memory.py). This allocates a few
    short-lived strings per process instead.
    """
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status", "rb") as handle:
                    for line in handle:
                        if line.startswith(b"Uid:"):
                            uids = tuple(int(field) for field in line.split()[1:])
                            break
                    else:
                        continue
            except (OSError, ValueError):  # exited meanwhile (or a kernel thread's oddity)
                continue
            yield int(entry.name), uids


def running_uids() -> set[int]:
    """Every real, effective, saved (and filesystem) uid of the running processes."""
    found: set[int] = set()
    for _pid, uids in process_uids():
        found.update(uids)
    return found


class UidClaim:
    """Holds a uid for this supervisor: an abstract unix socket named after it.

    Another ntpd-py instance on the host (or a test run next to it) cannot bind
    the same name, so two supervisors never hand out one uid, even while the
    worker that has it is in restart backoff and runs no process. Abstract
    names need no file system (ProtectSystem=strict) and vanish with us.
    """

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(f"\0ntpd-py-worker-uid-{uid}")
        except OSError:
            self._sock.close()
            raise

    def release(self) -> None:
        self._sock.close()


def _claim(uid: int) -> UidClaim | None:
    try:
        return UidClaim(uid)
    except OSError:
        return None


def allocate_uid(
    uid_range: tuple[int, int],
    taken: Iterable[int],
    *,
    has_passwd_entry: Callable[[int], bool] = _has_passwd_entry,
    in_use: Callable[[], set[int]] = running_uids,
    claim: Callable[[int], object | None] = lambda uid: True,
) -> int:
    """The first uid of the range that is not taken, not in passwd, not running and
    that `claim` gets (the supervisor's claim holds it against other instances)."""
    first, last = uid_range
    taken = set(taken)
    busy: set[int] | None = None
    for uid in range(first, last + 1):
        if uid in taken or uid == 0 or has_passwd_entry(uid):
            continue
        if busy is None:
            busy = in_use()  # read /proc once, only when a candidate is found
        if uid not in busy and claim(uid):
            return uid
    raise SlotError(
        f"[daemon] worker-uid-range = [{first}, {last}]: no free uid left (each worker "
        "needs one without a passwd entry that no running process uses); widen the range"
    )


def kill_uid(uid: int, log: logging.Logger | None = None) -> list[int]:
    """SIGKILL every process whose real, effective, saved or fs uid is `uid`; their pids."""
    if uid == 0 or uid == os.getuid():
        return []  # never ourselves (a mis-set slot must not take the supervisor down)
    killed = []
    me = os.getpid()
    for pid, uids in process_uids():
        if uid not in uids or pid == me:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    if killed and log is not None:
        log.warning("killed leftover process(es) %s running as worker uid %d",
                    ", ".join(map(str, killed)), uid)
    return killed


@dataclass
class Slot:
    number: int  # <n> of bus/<n>.sock; -1 without an endpoint
    worker_id: str
    role: str
    uid: int | None  # None: not root, no credential separation
    path: str | None = None  # bus endpoint (source and server workers)
    fd: int | None = None  # its listening socket, kept for the slot's life
    serial: int = 0  # tells a re-made slot from the one clock-control already has
    claim: UidClaim | None = None  # keeps other ntpd-py instances off our uid

    def user(self) -> str:
        if self.uid is None:
            return ""
        # A slot's uid has no passwd entry (allocate_uid makes sure); looking it up
        # would only load NSS modules into the supervisor (see _has_passwd_entry).
        return str(self.uid)

    def bus_slot(self) -> BusSlot | None:
        if self.path is None or self.role not in BUS_ROLES:
            return None
        return BusSlot(worker_id=self.worker_id, role=self.role,  # type: ignore[arg-type]
                       path=self.path)

    def identity(self, extra_gid: int | None = None) -> Identity | None:
        """uid = gid = the slot's number; no supplementary group unless one is given."""
        if self.uid is None:
            return None
        groups = () if extra_gid is None else (extra_gid,)
        return Identity(str(self.uid), str(self.uid), self.uid, self.uid, groups)


class SlotTable:
    """The supervisor's worker slots, by worker id."""

    def __init__(
        self,
        endpoints: Endpoints,
        uid_range: tuple[int, int] | None,
        log: logging.Logger,
        *,
        allocate: Callable[[tuple[int, int], Iterable[int]], int] | None = None,
        bind: bool = True,
    ) -> None:
        self.endpoints = endpoints
        self.uid_range = uid_range  # None: not root
        self.log = log
        self._allocate = allocate
        self._claims: dict[int, UidClaim] = {}
        self._bind = bind
        self.slots: dict[str, Slot] = {}
        self._serial = 0

    def numbers(self) -> set[int]:
        return {slot.number for slot in self.slots.values() if slot.number >= 0}

    def uids(self) -> set[int]:
        return {slot.uid for slot in self.slots.values() if slot.uid is not None}

    def ensure(self, worker_id: str, role: str) -> Slot:
        """The worker's slot, made (uid and endpoint) on first use."""
        slot = self.slots.get(worker_id)
        if slot is not None and slot.role == role:
            return slot
        if slot is not None:
            self.release(worker_id)
        used = self.numbers()
        # Only workers with a bus endpoint get a number (it names the endpoint).
        number = next(n for n in range(len(used) + 1) if n not in used) \
            if role in BUS_ROLES else -1
        uid = None if self.uid_range is None else self._new_uid(self.uid_range)
        self._serial += 1
        slot = Slot(number, worker_id, role, uid, serial=self._serial,
                    claim=self._claims.pop(uid, None) if uid is not None else None)
        if role in BUS_ROLES:
            slot.path = self.endpoints.slot_path(number)
            if self._bind:
                slot.fd = self._listen(slot)
        self.slots[worker_id] = slot
        return slot

    def _new_uid(self, uid_range: tuple[int, int]) -> int:
        if self._allocate is not None:
            return self._allocate(uid_range, self.uids())

        def claim(uid: int) -> bool:
            held = _claim(uid)
            if held is not None:
                self._claims[uid] = held
            return held is not None

        return allocate_uid(uid_range, self.uids(), claim=claim)

    def _listen(self, slot: Slot) -> int:
        assert slot.path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(slot.path)  # a stale endpoint of a previous run
            old = os.umask(0o077)  # never reachable by anyone else, not even briefly
            try:
                sock.bind(slot.path)
            finally:
                os.umask(old)
            # chmod first: once it belongs to the worker, root without CAP_FOWNER (the
            # systemd unit's bounding set) may no longer change its mode.
            os.chmod(slot.path, 0o600)
            if slot.uid is not None:
                os.chown(slot.path, slot.uid, slot.uid)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise SlotError(f"cannot create the bus endpoint {slot.path} for "
                            f"{slot.worker_id}: {exc.strerror}") from None
        return sock.detach()

    def release(self, worker_id: str) -> None:
        """A reload removed the worker: close its endpoint, free its uid and number."""
        slot = self.slots.pop(worker_id, None)
        if slot is None:
            return
        if slot.fd is not None:
            os.close(slot.fd)
        if slot.path is not None and self._bind:
            with contextlib.suppress(OSError):
                os.unlink(slot.path)
        if slot.uid is not None:
            kill_uid(slot.uid, self.log)
        if slot.claim is not None:
            slot.claim.release()

    def bus_slots(self) -> list[BusSlot]:
        return [b for s in self.slots.values() if (b := s.bus_slot()) is not None]

    def close(self) -> None:
        for worker_id in list(self.slots):
            slot = self.slots.pop(worker_id)
            if slot.claim is not None:
                slot.claim.release()
            if slot.fd is not None:
                os.close(slot.fd)
            if slot.path is not None and self._bind:
                with contextlib.suppress(OSError):
                    os.unlink(slot.path)


def make_bus_dir(path: str, as_root: bool) -> None:
    """`<runtime-dir>/bus/`: the supervisor's own directory (root, 0711 under root:
    workers may traverse it to their own endpoint, but not list it)."""
    mode = 0o711 if as_root else 0o700
    try:
        os.mkdir(path, mode)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise SlotError(f"cannot create {path}: {exc.strerror}") from None
    st = os.lstat(path)
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise SlotError(f"{path} exists but is not a directory owned by uid {os.geteuid()}: "
                        "remove it (the supervisor makes its own bus directory)")
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)  # ours, from a previous run
