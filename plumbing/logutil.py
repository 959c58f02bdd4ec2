"""Logging shared by every process: where lines go, their format, reopening, rate limits.

One line per event, prefixed with the process's role/id. Every process logs
to its stderr (fd 2). With `log-path` set, the supervisor — still root —
opens the file and makes it its own fd 2 before forking, so every child
inherits it and no child ever needs permission on the log file or its
directory. On SIGHUP the supervisor reopens the path (after a logrotate
rename) and hands the new descriptor to every child over its link
(:class:`ntpd_py.ipc.messages.LogControl`), which puts it on its fd 2.

When stderr is the systemd journal (JOURNAL_STREAM names the very file
stderr is), timestamps are left out, because the journal adds its own, and
every line starts with its syslog priority `<N>` (sd-daemon(3)), so that
`journalctl -p warning` selects by level. Children learn the format from
the supervisor (inherited at fork, then each LogControl), so a worker's
lines carry the priority too. The level
is `[observability] log-level`, unless `ntpd-py run -l LEVEL` overrides it;
the override is kept in this module, so forked children inherit it.

A condition that repeats (a flapping device, a flood of malformed frames) is
logged once per window with the number of repeats, never per packet.
"""

from __future__ import annotations

import collections
import logging
import os
import sys

__all__ = [
    "LEVELS",
    "LogSink",
    "RateLimitedLog",
    "apply_log_control",
    "effective_level",
    "journal_format",
    "journal_prefix",
    "prefix_lines",
    "reopen_logs",
    "set_level_override",
    "setup_child_logging",
    "setup_logging",
    "stderr_is_journal",
    "syslog_priority",
]

LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FILE_MODE = 0o640

_level_override: str | None = None
_handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
_timestamps = True


def set_level_override(level: str | None) -> None:
    """`-l/--log-level`: wins over the configuration, also after a reload."""
    global _level_override
    _level_override = level


def effective_level(config_level: str) -> str:
    return _level_override or config_level


def stderr_is_journal() -> bool:
    """Whether fd 2 is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return st.st_dev == device and st.st_ino == inode


class LogSink:
    """The supervisor's fd 2: the original stderr, or `log-path` opened by it."""

    def __init__(self) -> None:
        self._original = os.dup(2)  # the terminal or the journal, for when log-path goes away
        os.set_inheritable(self._original, False)
        self.path: str | None = None

    def open(self, path: str | None) -> None:
        """Point fd 2 at `path` (opened anew: a rotated file is let go) or the original stderr.

        Raises OSError if the file cannot be opened; fd 2 is then unchanged.
        """
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
        else:
            fd = os.dup(self._original)
        try:
            sys.stderr.flush()
            os.dup2(fd, 2)
        finally:
            os.close(fd)
        self.path = path


def syslog_priority(levelno: int) -> int:
    """The syslog priority (sd-daemon(3), RFC 5424) of a logging level."""
    if levelno >= logging.CRITICAL:
        return 2  # crit
    if levelno >= logging.ERROR:
        return 3  # err
    if levelno >= logging.WARNING:
        return 4  # warning
    if levelno >= logging.INFO:
        return 6  # info
    return 7  # debug (and trace)


def journal_prefix(levelno: int) -> str:
    """`<N>`, which the journal (SyslogLevelPrefix=yes, the default) takes as the priority."""
    return f"<{syslog_priority(levelno)}>"


def prefix_lines(text: str, levelno: int) -> str:
    """Every line of `text` with the priority prefix.

    The journal cuts a stream at newlines and reads the prefix of each line, so
    a traceback's later lines would otherwise fall back to the unit's
    SyslogLevel (info) and vanish from `journalctl -p warning`.
    """
    prefix = journal_prefix(levelno)
    return "\n".join(prefix + line for line in text.split("\n"))


class _JournalFormatter(logging.Formatter):
    """No timestamps (the journal adds its own) and the priority on every line."""

    def format(self, record: logging.LogRecord) -> str:
        return prefix_lines(super().format(record), record.levelno)


def _formatter(timestamps: bool) -> logging.Formatter:
    # timestamps=False means "stderr is the journal" (setup_logging, LogControl).
    fmt = "%(name)s: %(levelname)s: %(message)s"
    if not timestamps:
        return _JournalFormatter(fmt)
    return logging.Formatter("%(asctime)s " + fmt)


def journal_format() -> bool:
    """Whether this process's log lines are in the journal's format (see _formatter)."""
    return not _timestamps


def _install(level: str, name: str, timestamps: bool) -> logging.Logger:
    global _handler, _timestamps
    logging.addLevelName(5, "TRACE")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(_formatter(timestamps))
    _timestamps = timestamps
    root.addHandler(_handler)
    root.setLevel(LEVELS.get(effective_level(level), logging.INFO))
    return logging.getLogger(name)


_sink: LogSink | None = None


def setup_logging(level: str, name: str, path: str | None = None) -> logging.Logger:
    """Set up the top process (supervisor, single-process mode): fd 2 is `path` if given.

    If `path` cannot be opened the error is logged to the original stderr and
    logging stays there (the daemon must not fail to start over its log file).
    """
    global _sink
    if _sink is None:
        _sink = LogSink()
    problem = None
    try:
        _sink.open(path)
    except OSError as exc:
        problem = f"cannot open log-path {path}: {exc.strerror}; logging to stderr"
        _sink.open(None)
    log = _install(level, name, not stderr_is_journal())
    if problem:
        log.error("%s", problem)
    return log


def reopen_logs(path: str | None, level: str, log: logging.Logger) -> bool:
    """SIGHUP in the supervisor: reopen `path`, apply `level`; True if fd 2 changed."""
    global _sink
    if _sink is None:
        _sink = LogSink()
    try:
        _sink.open(path)
    except OSError as exc:
        log.error("cannot reopen log-path %s: %s; keeping the old one", path, exc.strerror)
        changed = False
    else:
        changed = True
    apply_log_control(level, not stderr_is_journal(), [])
    return changed


def setup_child_logging(level: str, name: str) -> logging.Logger:
    """In a freshly forked child: log to the inherited fd 2 in the supervisor's format."""
    return _install(level, name, _timestamps)


def apply_log_control(level: str, timestamps: bool, fds: list[int]) -> None:
    """Take a new stderr (the first fd, if any) and apply the level and format."""
    global _timestamps
    if fds:
        sys.stderr.flush()
        os.dup2(fds[0], 2)
    for fd in fds:
        if fd != 2:
            os.close(fd)
    logging.getLogger().setLevel(LEVELS.get(effective_level(level), logging.INFO))
    _timestamps = timestamps
    if _handler is not None:
        _handler.setFormatter(_formatter(timestamps))


class RateLimitedLog:
    """Log a keyed condition at most `burst` times per `window_ns`, counting the repeats.

    What was held back is not lost: :meth:`flush` (called from the loop's
    housekeeping) logs the latest held-back message of a key once the window
    allows it again, so the last state of a flapping condition always shows up.
    """

    def __init__(
        self, logger: logging.Logger, window_ns: int = 60_000_000_000, burst: int = 1
    ) -> None:
        self._logger = logger
        self._window = window_ns
        self._burst = burst
        self._times: dict[str, collections.deque[int]] = {}
        self._suppressed: dict[str, int] = {}
        self._pending: dict[str, tuple[int, str, tuple[object, ...]]] = {}

    def _may_log(self, key: str, now_ns: int) -> bool:
        times = self._times.setdefault(key, collections.deque())
        while times and now_ns - times[0] >= self._window:
            times.popleft()
        return len(times) < self._burst

    def log(self, level: int, key: str, now_ns: int, message: str, *args: object) -> None:
        if not self._may_log(key, now_ns):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._pending[key] = (level, message, args)
            return
        repeats = self._suppressed.pop(key, 0)
        self._pending.pop(key, None)
        suffix = f" ({repeats} more since last report)" if repeats else ""
        self._times[key].append(now_ns)
        self._logger.log(level, message + suffix, *args)

    def flush(self, now_ns: int) -> None:
        for key in list(self._pending):
            if not self._may_log(key, now_ns):
                continue
            level, message, args = self._pending.pop(key)
            repeats = self._suppressed.pop(key, 0)
            self._times[key].append(now_ns)
            self._logger.log(level, message + f" (last of {repeats} since last report)", *args)
