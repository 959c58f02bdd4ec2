"""What every source and server worker shares: the bus, the supervisor link, heartbeats."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ntpd_py.ipc.channels import Channel
from ntpd_py.ipc.framing import MalformedMessage, decode, encode
from ntpd_py.ipc.link import Link, LinkClosed
from ntpd_py.ipc.messages import HEARTBEAT_INTERVAL_NS, Heartbeat, LogControl, Message, MsgType
from ntpd_py.plumbing.logutil import RateLimitedLog, apply_log_control
from ntpd_py.plumbing.scheduler import Now

__all__ = ["RIDE_ALONG_NS", "WorkerBase"]

STATUS_INTERVAL_NS = 2 * HEARTBEAT_INTERVAL_NS
# A periodic message goes out early, with whatever else woke the process, when its
# deadline is this close: a PHC worker polling every second then sends its heartbeat
# and status with a sample instead of waking itself (and its receiver) for them.
RIDE_ALONG_NS = 1_100_000_000


class WorkerBase:
    """Sends to clock-control over the bus, heartbeats the supervisor, counts drops."""

    def __init__(
        self, worker_id: str, bus: Channel, link: Link | None, log: logging.Logger
    ) -> None:
        self.name = worker_id
        self.worker_id = worker_id
        self.bus = bus
        self.link = link
        self.log = log
        self.limited = RateLimitedLog(log)
        self.bus_dropped = 0
        self.bus_malformed = 0
        self._next_heartbeat = 0
        self._next_status = 0
        self.link_closed = False

    def close(self) -> None:
        """Release what the task opened itself (the bus and link belong to its main)."""

    def send(self, message: Message) -> None:
        if not self.bus.send(encode(message)):
            self.bus_dropped += 1  # clock-control is gone or its queue for us is full

    def base_pollables(self) -> list[Any]:
        items: list[Any] = [self.bus]
        if self.link is not None and not self.link_closed:
            items.append(self.link.fileno())
        return items

    def base_deadline(self) -> int:
        return min(self._next_heartbeat, self._next_status)

    def drain_bus(self, accept: set[MsgType], handle: Callable[[Message], None], now: Now) -> None:
        while (item := self.bus.recv()) is not None:
            try:
                message = decode(item[1], accept)
            except MalformedMessage as exc:
                self.bus_malformed += 1
                self.limited.log(
                    logging.WARNING,
                    "bus",
                    now.mono_ns,
                    "dropped a malformed frame from clock-control: %s",
                    exc,
                )
                continue
            handle(message)

    def drain_link(self, handle: Callable[[Message, list[int]], None]) -> None:
        if self.link is None or self.link_closed:
            return
        try:
            while (item := self.link.recv()) is not None:
                if isinstance(item[0], LogControl):
                    apply_log_control(item[0].level, item[0].timestamps, item[1])
                    continue
                handle(*item)
        except LinkClosed:
            # The supervisor is gone; PDEATHSIG will end us too.
            self.link_closed = True

    def housekeeping(self, now: Now, status: Callable[[], Message | None]) -> None:
        self.limited.flush(now.mono_ns)
        early = now.mono_ns + RIDE_ALONG_NS
        if self.link is not None and not self.link_closed and early >= self._next_heartbeat:
            self.link.send(Heartbeat(worker_id=self.worker_id, mono_ns=now.mono_ns))
            self._next_heartbeat = now.mono_ns + HEARTBEAT_INTERVAL_NS
        elif self.link is None:
            self._next_heartbeat = now.mono_ns + 3600 * 1_000_000_000
        if early >= self._next_status:
            message = status()
            if message is not None:
                self.send(message)
            self._next_status = now.mono_ns + STATUS_INTERVAL_NS

    def status_now(self) -> None:
        self._next_status = 0

    @staticmethod
    def close_fds(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
