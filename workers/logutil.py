"""Logging set-up shared by every process, and a once-per-window limiter.

One line per event, prefixed with the process's role/id. Under systemd
(JOURNAL_STREAM set) no timestamp is added, because the journal adds its own.
A condition that repeats (a flapping device, a flood of malformed frames) is
logged once per window with the number of repeats, never per packet.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["RateLimitedLog", "setup_logging"]

LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str, name: str, path: str | None = None) -> logging.Logger:
    logging.addLevelName(5, "TRACE")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    under_systemd = bool(os.environ.get("JOURNAL_STREAM")) and path is None
    fmt = "%(name)s: %(levelname)s: %(message)s"
    if not under_systemd:
        fmt = "%(asctime)s " + fmt
    handler: logging.Handler
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    return logging.getLogger(name)


class RateLimitedLog:
    """Log a keyed condition at most once per `window_ns`, counting the repeats."""

    def __init__(self, logger: logging.Logger, window_ns: int = 60_000_000_000) -> None:
        self._logger = logger
        self._window = window_ns
        self._last: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, now_ns: int, message: str, *args: object) -> None:
        last = self._last.get(key)
        if last is not None and now_ns - last < self._window:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} more since last report)" if repeats else ""
        self._last[key] = now_ns
        self._logger.log(level, message + suffix, *args)
