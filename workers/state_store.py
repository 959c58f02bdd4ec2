"""Clock-control's persistent state: a quick-restart snapshot and the drift file.

- ``<runtime-dir>/clock-control.state``: the algorithm's exported state
  (msgpack), written at most once a second, so that a restarted clock-control
  resumes where the dead one stopped — no step, no re-convergence.
- ``<state-dir>/drift``: frequency and its uncertainty, written at most once
  an hour and at stop, read at start so a reboot converges at once.

Every write is atomic: temporary file, then rename. The drift file must also
survive a power cut, so it is fsynced (file and directory); the quick snapshot
only has to survive the death of the process (the page cache keeps it), lives
in the runtime directory (tmpfs on a normal system) and is written every
second, so it is not.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgpack

__all__ = ["StateStore", "atomic_write"]

QUICK_STATE_MAX_AGE_NS = 3600 * 1_000_000_000
QUICK_STATE_INTERVAL_NS = 1_000_000_000
DRIFT_INTERVAL_NS = 3600 * 1_000_000_000


def atomic_write(path: str, data: bytes, mode: int = 0o640, durable: bool = True) -> None:
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateStore:
    def __init__(self, runtime_dir: str, state_dir: str, log: logging.Logger) -> None:
        self.quick_path = os.path.join(runtime_dir, "clock-control.state")
        self.drift_path = os.path.join(state_dir, "drift")
        self._log = log
        self._last_quick_ns: int | None = None
        self._last_drift_ns: int | None = None

    def load_quick(self, now_mono_ns: int) -> dict[str, Any] | None:
        try:
            with open(self.quick_path, "rb") as handle:
                data = msgpack.unpackb(handle.read(1 << 22), raw=False, strict_map_key=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            self._log.warning("ignoring unreadable %s: %s", self.quick_path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
            self._log.warning("ignoring malformed %s", self.quick_path)
            return None
        saved_at = data.get("mono_ns")
        if (
            not isinstance(saved_at, int)
            or not 0 <= now_mono_ns - saved_at <= QUICK_STATE_MAX_AGE_NS
        ):
            self._log.info("not resuming from %s: too old or from before a reboot", self.quick_path)
            return None
        state: dict[str, Any] = data["state"]
        return state

    def quick_due(self, now_mono_ns: int) -> bool:
        return (self._last_quick_ns is None
                or now_mono_ns - self._last_quick_ns >= QUICK_STATE_INTERVAL_NS)

    def drift_due(self, now_mono_ns: int) -> bool:
        return (self._last_drift_ns is None
                or now_mono_ns - self._last_drift_ns >= DRIFT_INTERVAL_NS)

    def save_quick(self, state: dict[str, Any], now_mono_ns: int, force: bool = False) -> None:
        if not force and not self.quick_due(now_mono_ns):
            return
        self._last_quick_ns = now_mono_ns
        payload = msgpack.packb({"mono_ns": now_mono_ns, "state": state}, use_bin_type=True)
        try:
            atomic_write(self.quick_path, payload, 0o600, durable=False)  # clock-control only
        except OSError as exc:
            self._log.warning("cannot save %s: %s", self.quick_path, exc)

    def load_drift_text(self) -> str | None:
        try:
            with open(self.drift_path, encoding="utf-8") as handle:
                return handle.read(4096)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self._log.warning("ignoring unreadable drift file %s: %s", self.drift_path, exc)
            return None

    def save_drift_text(self, text: str, now_mono_ns: int, force: bool = False) -> None:
        if self._last_drift_ns is None and not force:
            self._last_drift_ns = now_mono_ns  # the first write comes an hour after start
            return
        if not force and not self.drift_due(now_mono_ns):
            return
        self._last_drift_ns = now_mono_ns
        try:
            atomic_write(self.drift_path, text.encode(), 0o644)
        except OSError as exc:
            self._log.warning("cannot write drift file %s: %s", self.drift_path, exc)
