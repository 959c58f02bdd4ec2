"""systemd integration of the supervisor: sd_notify, readiness, watchdog, status line.

`sd_notify` is a datagram to the AF_UNIX socket named by NOTIFY_SOCKET (a
path, or an abstract name written with a leading "@"); that is the whole
protocol, so it is written here in a few lines instead of depending on a
library. Without NOTIFY_SOCKET every call is a no-op, so the same supervisor
runs in a terminal, under systemd, or in tests.

:class:`SystemdNotifier` decides *when* to say what (`Type=notify`):

- ``READY=1`` once clock-control and every worker have sent their first
  heartbeat. A worker that cannot come up must not keep the clock unmanaged,
  so once clock-control is up, READY is sent anyway after
  ``READY_GRACE_NS``, with a warning naming the missing workers.
- ``WATCHDOG=1`` at half of ``WatchdogSec`` (WATCHDOG_USEC), from the
  supervisor's loop: a hung supervisor is restarted by systemd, as a hung
  worker is restarted by the supervisor.
- ``STATUS=`` the one-line sync summary clock-control puts in its heartbeat
  (``systemctl status`` shows it), or which processes are still starting.
- ``RELOADING=1`` / ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` at the end.

All methods take `now` (CLOCK_MONOTONIC ns) and never block.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Protocol

__all__ = ["READY_GRACE_NS", "SystemdNotifier", "sd_notify"]

READY_GRACE_NS = 30_000_000_000
MAX_STATUS = 200


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` ("READY=1", "STATUS=…") to systemd; False if not under systemd or failed."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def _watchdog_interval_ns(environ: Mapping[str, str]) -> int | None:
    """Half of WatchdogSec, if the watchdog is armed for this very process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec * 1000 // 2


class _ChildLike(Protocol):
    @property
    def state(self) -> str: ...  # read-only: a Child's ChildState (a str enum) fits


class SystemdNotifier:
    def __init__(self, log: logging.Logger, environ: Mapping[str, str] | None = None) -> None:
        self.log = log
        self._env = dict(os.environ if environ is None else environ)
        self.enabled = bool(self._env.get("NOTIFY_SOCKET"))
        self._watchdog_ns = _watchdog_interval_ns(self._env)
        self._next_watchdog = 0
        self._started_ns: int | None = None
        self._up: set[str] = set()
        self.ready = False
        self._status = ""
        self._cc_status = ""
        self.sent: list[str] = []  # what went out, for tests and `--debug`

    def notify(self, state: str) -> None:
        if self.enabled and sd_notify(state, self._env):
            self.sent.append(state)

    def heartbeat(self, worker_id: str, status: str) -> None:
        self._up.add(worker_id)
        if worker_id == "clock-control" and status:
            self._cc_status = status[:MAX_STATUS]

    def tick(self, now: int, children: Mapping[str, _ChildLike]) -> None:
        if not self.enabled:
            return
        if self._started_ns is None:
            self._started_ns = now
        if not self.ready:
            self._maybe_ready(now, children)
        if self._cc_status and self.ready:
            self._set_status(self._cc_status)
        if self._watchdog_ns is not None and now >= self._next_watchdog:
            self.notify("WATCHDOG=1")
            self._next_watchdog = now + self._watchdog_ns

    def next_deadline_ns(self) -> int | None:
        """When `tick` next has something to do on its own (watchdog, READY grace)."""
        if not self.enabled:
            return None
        deadlines = []
        if self._watchdog_ns is not None:
            deadlines.append(self._next_watchdog)
        if not self.ready and self._started_ns is not None:
            deadlines.append(self._started_ns + READY_GRACE_NS)
        return min(deadlines, default=None)

    def _maybe_ready(self, now: int, children: Mapping[str, _ChildLike]) -> None:
        wanted = [wid for wid, c in children.items() if c.state != "stopped"]
        missing = [wid for wid in wanted if wid not in self._up]
        assert self._started_ns is not None
        if not missing:
            self.ready = True
            self.notify("READY=1")
            self.log.info("ready: clock-control and %d worker(s) up", len(wanted) - 1)
        elif "clock-control" in self._up and now - self._started_ns >= READY_GRACE_NS:
            self.ready = True
            self.notify("READY=1")
            self.log.warning(
                "ready, but without %s (not up after %.0f s)",
                ", ".join(sorted(missing)),
                READY_GRACE_NS / 1e9,
            )
        else:
            self._set_status(f"starting: {len(wanted) - len(missing)}/{len(wanted)} processes up")

    def _set_status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.notify("STATUS=" + text)

    def reloading(self) -> None:
        self.notify("RELOADING=1")

    def reloaded(self) -> None:
        if self.ready:
            self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
