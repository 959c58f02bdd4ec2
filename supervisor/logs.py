"""SIGHUP for logs: reopen `log-path` in the supervisor and hand it to every child.

logrotate renames the file and sends SIGHUP (see docs/service.md,
"Logging"). The supervisor, still root, opens the path anew and sends the new
descriptor to each child over its link with a :class:`LogControl` (SCM_RIGHTS);
the child puts it on its stderr. A reload's new `log-level` travels with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from ntpd_py.core.config import ObservabilityConfig
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import LogControl
from ntpd_py.plumbing.logutil import effective_level, reopen_logs, stderr_is_journal

__all__ = ["reopen_and_share_logs"]


class _HasLink(Protocol):
    link: Link | None


def reopen_and_share_logs(
    observability: ObservabilityConfig, children: Iterable[_HasLink], log: logging.Logger
) -> int:
    """Reopen and broadcast; returns how many children were told."""
    level = effective_level(observability.log_level)
    reopen_logs(observability.log_path, level, log)
    message = LogControl(level=level, timestamps=not stderr_is_journal())  # type: ignore[arg-type]
    told = 0
    for child in children:
        if child.link is not None and child.link.send(message, [2]):
            told += 1
    log.info("logging to %s at level %s", observability.log_path or "stderr", level)
    return told
