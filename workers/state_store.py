"""Clock-control's persistent state: a quick-restart snapshot and the drift file.

- ``<runtime-dir>/clock-control.state``: the algorithm's exported state
  (msgpack), written at most once a second, so that a restarted clock-control
  resumes where the dead one stopped — no step, no re-convergence.
- ``<state-dir>/drift``: frequency and its uncertainty, written at most once
  an hour and at stop, read at start so a reboot converges at once.

The quick snapshot is authenticated: HMAC-SHA256 with a key the supervisor
draws at start and hands to each clock-control it forks
(:mod:`.handover`), so a file not written by a clock-control of this daemon
is never resumed. Its content is validated as well (by the controller), and
what bounds steps comes from the supervisor's copy too: a replayed older file
cannot re-open the start-up limit.

"cannot save" (either file) is logged once, then at most once a minute with
the number of repeats: a lost runtime directory must not flood the log.

Every write is atomic: temporary file, then rename. The drift file must also
survive a power cut, so it is fsynced (file and directory); the quick snapshot
only has to survive the death of the process (the page cache keeps it), lives
in the runtime directory (tmpfs on a normal system) and is written every
second, so it is not.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from typing import Any

import msgpack
from ntpd_py.plumbing.logutil import RateLimitedLog

__all__ = ["StateStore", "atomic_write"]

QUICK_STATE_MAX_AGE_NS = 3600 * 1_000_000_000
QUICK_STATE_INTERVAL_NS = 1_000_000_000
DRIFT_INTERVAL_NS = 3600 * 1_000_000_000
MAX_QUICK_STATE_BYTES = 1 << 22
_MAC_BYTES = 32


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
    def __init__(
        self,
        runtime_dir: str,
        state_dir: str,
        log: logging.Logger,
        key: bytes | None = None,
        first_start: bool = True,
    ) -> None:
        self.quick_path = os.path.join(runtime_dir, "clock-control.state")
        self.drift_path = os.path.join(state_dir, "drift")
        self._log = log
        self._limited = RateLimitedLog(log)
        # Without a key from the supervisor (--single-process, tests) a fresh one:
        # then only this process's own snapshots would be accepted.
        self._key = key if key is not None else os.urandom(32)
        self._first_start = first_start
        self._last_quick_ns: int | None = None
        self._last_drift_ns: int | None = None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def load_quick(self, now_mono_ns: int) -> dict[str, Any] | None:
        """The saved controller state if this daemon's clock-control wrote it, recently.

        Its fields are not checked here (the controller validates every one).
        """
        try:
            with open(self.quick_path, "rb") as handle:
                raw = handle.read(MAX_QUICK_STATE_BYTES + _MAC_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._log.warning("ignoring unreadable %s: %s", self.quick_path, exc)
            return None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(raw) > MAX_QUICK_STATE_BYTES + _MAC_BYTES or not hmac.compare_digest(
            mac, self._mac(payload)
        ):
            # At the first start it is normally a file from an earlier run of the daemon.
            level = logging.INFO if self._first_start else logging.WARNING
            self._log.log(level, "discarding %s: not written by this daemon's clock-control "
                          "(left by an earlier run, or rewritten by someone else)",
                          self.quick_path)
            return None
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._log.warning("discarding unreadable %s: %s", self.quick_path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
            self._log.warning("discarding malformed %s", self.quick_path)
            return None
        saved_at = data.get("mono_ns")
        if (
            isinstance(saved_at, bool)
            or not isinstance(saved_at, int)
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
        self._limited.flush(now_mono_ns)
        if not force and not self.quick_due(now_mono_ns):
            return
        self._last_quick_ns = now_mono_ns
        payload = msgpack.packb({"mono_ns": now_mono_ns, "state": state}, use_bin_type=True)
        try:
            # 0600: clock-control's alone.
            atomic_write(self.quick_path, self._mac(payload) + payload, 0o600, durable=False)
        except OSError as exc:
            self._limited.log(logging.WARNING, "save-quick", now_mono_ns,
                              "cannot save %s: %s", self.quick_path, exc)

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
        self._limited.flush(now_mono_ns)
        if self._last_drift_ns is None and not force:
            self._last_drift_ns = now_mono_ns  # the first write comes an hour after start
            return
        if not force and not self.drift_due(now_mono_ns):
            return
        self._last_drift_ns = now_mono_ns
        try:
            atomic_write(self.drift_path, text.encode(), 0o644)
        except OSError as exc:
            self._limited.log(logging.WARNING, "save-drift", now_mono_ns,
                              "cannot write drift file %s: %s", self.drift_path, exc)
