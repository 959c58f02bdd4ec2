"""Read the configuration file from disk and hand its text to the core loader.

This is the I/O half of configuration loading: it turns a missing, unreadable
or undecodable file into the same :class:`ConfigError` the core uses for bad
contents, so callers print one kind of error and exit 78.
"""

from __future__ import annotations

import os
import stat

from ntpd_py.core.config import DEFAULT_CONFIG_PATH, Config
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError, ConfigIssue

__all__ = ["EX_CONFIG", "file_warnings", "load_config_file"]

EX_CONFIG = 78  # sysexits.h: configuration error


def load_config_file(path: str | None) -> Config:
    """Load `path` (default `/etc/ntpd-py/ntp.toml`); raise ConfigError on any problem."""
    path = path or DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as handle:
            raw = handle.read(4 * 1024 * 1024 + 1)
    except FileNotFoundError:
        hint = " (give another file with -c/--config)" if path == DEFAULT_CONFIG_PATH else ""
        raise ConfigError([ConfigIssue(path, "", f"no such file{hint}")]) from None
    except PermissionError:
        raise ConfigError([ConfigIssue(path, "", "permission denied reading the file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(path, "", "is a directory, expected a TOML file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > 4 * 1024 * 1024:
        raise ConfigError([ConfigIssue(path, "", "larger than 4 MiB; not a configuration file")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(path, "", "not valid UTF-8", line)]) from None
    return load_config_text(text, path)


def file_warnings(path: str | None) -> list[str]:
    """Warnings about the file itself (as ntpd-rs: a world-writable config)."""
    path = path or DEFAULT_CONFIG_PATH
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & stat.S_IWOTH:
        return [f"{path} is writable by every user: anyone could change how the clock is set"]
    return []
