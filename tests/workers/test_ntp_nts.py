"""NtpTask with an NTS source: a failed key exchange leaves the source waiting with
the reason in its status and retries with a doubling backoff; a key exchange in
progress never blocks the worker's loop (loopback TCP only)."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.ntp_source_state import NtpSourceState
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.workers import ntp
from ntpd_py.workers.ntp import KE_RETRY_MIN_NS, NtpTask

from tests.nts_helpers import free_tcp_port


class _Bus:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def recv(self) -> Any:
        return None


def _nts_task(port: int) -> NtpTask:
    """An NTS source's task whose key exchange goes to 127.0.0.1:``port``."""
    config = load_config_text(f'[[source]]\nmode = "nts"\naddress = "127.0.0.1:{port}"\n')
    source = config.source[0]
    return NtpTask(config=config, source=source, worker_id="nts:x", peer=source.address,  # type: ignore[arg-type]
                   bus=_Bus(), link=None, log=logging.getLogger("test"))


def test_failed_key_exchange_waits_with_reason_and_backs_off() -> None:
    port = free_tcp_port()  # nothing listens: the connect is refused at once
    task = _nts_task(port)
    try:
        now = Now(mono_ns=1_000_000_000, real_ns=0)
        _until_done(task, now)
        assert task.channel is None and task.state is NtpSourceState.WAITING
        assert "NTS-KE with 127.0.0.1" in task.detail and "failed" in task.detail
        assert task._resolve_at == now.mono_ns + KE_RETRY_MIN_NS
        later = Now(mono_ns=task._resolve_at, real_ns=0)
        _until_done(task, later)
        assert task._resolve_at == later.mono_ns + 2 * KE_RETRY_MIN_NS
        status = task._status()
        assert status.nts is True and status.cookies == 0 and status.authenticated == 0
        assert status.state == "waiting" and "NTS-KE" in status.detail
    finally:
        task.close()


def _until_done(task: NtpTask, now: Now) -> None:
    """Resume the key exchange until it is over (a refused connect may take a wake-up)."""
    task._resolve(now)
    for _ in range(200):
        if task._ke is None:
            return
        time.sleep(0.01)
        task._resolve(now)
    raise AssertionError("the key exchange did not end")


def test_a_key_exchange_in_progress_does_not_block_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A KE server that accepts and then says nothing: each pass of the loop returns at
    once with the exchange waiting on its socket (the worker's loop waits on it beside
    its link and bus), and the deadline, not the server, ends it."""
    monkeypatch.setattr(ntp, "KE_TIMEOUT_S", 0.5)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    task = _nts_task(port)
    try:
        now = Now(mono_ns=1_000_000_000, real_ns=0)
        started = time.monotonic()
        task._resolve(now)
        if task._ke_wait is not None and task._ke_wait.writable:
            # a connect in progress: looked at again at one fixed instant (a deadline
            # that moved with every look would never come due)
            first = task.next_deadline_ns()
            time.sleep(0.002)
            assert task.next_deadline_ns() == first
        for _ in range(20):  # the connect completes; the handshake waits for the server
            if task._ke_wait is not None and not task._ke_wait.writable:
                break
            time.sleep(0.01)
            task._resolve(now)
        wait = task._ke_wait
        assert wait is not None and not wait.writable, "waiting to read the ServerHello"
        assert time.monotonic() - started < 0.5, "returned before the exchange's deadline"
        assert wait.sock.fileno() in task.pollables()
        deadline = task.next_deadline_ns()
        assert deadline is not None and deadline <= int(wait.deadline * 1e9) + 1
        assert task.state is NtpSourceState.STARTING and task.channel is None
        assert "in progress" in task._status().detail
        time.sleep(0.6)
        task._resolve(now)
        assert task._ke is None and task._ke_wait is None
        assert "timed out" in task.detail and task.state is NtpSourceState.WAITING
        assert wait.sock.fileno() == -1  # closed with the exchange
    finally:
        task.close()
        listener.close()


def test_a_restarted_key_exchange_closes_the_one_in_progress() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    task = _nts_task(port)
    try:
        now = Now(mono_ns=1_000_000_000, real_ns=0)
        task._resolve(now)
        assert task._ke is not None
        sock = task._ke_wait.sock if task._ke_wait is not None else None
        task._restart_key_exchange(now, "NTS NAK from the server")
        assert task._ke is None and task._ke_wait is None
        assert sock is None or sock.fileno() == -1
    finally:
        task.close()
        listener.close()
