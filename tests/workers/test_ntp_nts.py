"""NtpTask with an NTS source: a failed key exchange leaves the source waiting with
the reason in its status and retries with a doubling backoff (no sockets beyond a
refused loopback TCP connect)."""

from __future__ import annotations

import logging
from typing import Any

from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.ntp_source_state import NtpSourceState
from ntpd_py.plumbing.scheduler import Now
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


def test_failed_key_exchange_waits_with_reason_and_backs_off() -> None:
    port = free_tcp_port()  # nothing listens: the connect is refused at once
    config = load_config_text(f'[[source]]\nmode = "nts"\naddress = "127.0.0.1:{port}"\n')
    source = config.source[0]
    task = NtpTask(config=config, source=source, worker_id="nts:x", peer=source.address,  # type: ignore[arg-type]
                   bus=_Bus(), link=None, log=logging.getLogger("test"))
    try:
        now = Now(mono_ns=1_000_000_000, real_ns=0)
        task._resolve(now)
        assert task.channel is None and task.state is NtpSourceState.WAITING
        assert "NTS-KE with 127.0.0.1" in task.detail and "failed" in task.detail
        assert task._resolve_at == now.mono_ns + KE_RETRY_MIN_NS
        later = Now(mono_ns=task._resolve_at, real_ns=0)
        task._resolve(later)
        assert task._resolve_at == later.mono_ns + 2 * KE_RETRY_MIN_NS
        status = task._status()
        assert status.nts is True and status.cookies == 0 and status.authenticated == 0
        assert status.state == "waiting" and "NTS-KE" in status.detail
    finally:
        task.close()
