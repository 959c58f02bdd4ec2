"""Notice when the runtime directory, or a socket the daemon made in it, disappears.

Without it, a deleted runtime directory (a careless `rm -rf /run/*`, a
tmpfiles clean-up) leaves restarted workers connecting to nothing — ZeroMQ
retries silently — and the daemon goes unsynchronized without a word. The
supervisor calls :meth:`RuntimeWatch.check` from its loop about every 2 s; a
few `stat` calls each time. On a finding it stops every child and exits
EX_TEMPFAIL (75), which systemd's `Restart=on-failure` restarts with a fresh
directory; a rebuild in place would race the children that hold the old paths.

What is watched is learnt, not listed, so that new sockets need no change here:
the runtime directory itself and the control socket's directory (by inode),
every directory inside the runtime directory (by inode; they are permanent),
and every unix socket found in the runtime directory plus the control socket.
Sockets belong to clock-control, which unlinks them when it exits and binds
them again when restarted; so a missing socket only counts while clock-control
keeps the same pid: at the second check when that clock-control had bound it,
at the fourth when it never did (a slow start is not a deleted socket).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field

from ntpd_py.core.exit_codes import EX_TEMPFAIL

__all__ = ["CHECK_INTERVAL_NS", "EX_TEMPFAIL", "RuntimeWatch"]

# EX_TEMPFAIL: systemd restarts it (RestartPreventExitStatus lists 70 73 77 78)
CHECK_INTERVAL_NS = 2_000_000_000

_Key = tuple[int, int]  # (st_dev, st_ino)


def _key(path: str) -> _Key | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass
class RuntimeWatch:
    runtime_dir: str
    control_path: str
    next_check_ns: int = 0
    _dirs: dict[str, _Key] = field(default_factory=dict)
    # Every socket path seen in the runtime directory (and the control socket once
    # seen): the daemon makes each again after a clock-control restart.
    _expected: set[str] = field(default_factory=set)
    _seen: dict[str, int | None] = field(default_factory=dict)  # path -> cc pid that had it
    _misses: dict[str, tuple[int | None, int]] = field(default_factory=dict)  # path -> (pid, n)

    def arm(self, now: int, sockets: tuple[str, ...] = ()) -> None:
        """Remember the directories as they are now (after `prepare` made them).

        `sockets`: paths clock-control will bind, watched before they are first seen.
        """
        self._expected.update((self.control_path, *sockets))
        for path in {self.runtime_dir, os.path.dirname(self.control_path)}:
            key = _key(path)
            if key is not None:
                self._dirs[path] = key
        self.next_check_ns = now + CHECK_INTERVAL_NS

    def check(self, now: int, clock_control_pid: int | None) -> str | None:
        """Say what vanished, or None. Cheap; does nothing until `next_check_ns`."""
        if now < self.next_check_ns:
            return None
        self.next_check_ns = now + CHECK_INTERVAL_NS
        for path, key in self._dirs.items():
            current = _key(path)
            if current is None:
                return f"directory {path} was deleted"
            if current != key:
                return f"directory {path} was replaced by another one"
        self._learn()
        return self._check_sockets(clock_control_pid)

    def _learn(self) -> None:
        try:
            entries = list(os.scandir(self.runtime_dir))
        except OSError:
            return
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and entry.path not in self._dirs:
                self._dirs[entry.path] = (st.st_dev, st.st_ino)

    def _check_sockets(self, cc_pid: int | None) -> str | None:
        # Each known path is looked up by name: under the systemd unit root has no
        # CAP_DAC_READ_SEARCH and may not list the runtime directory (0751, clock-control's).
        present = {path for path in (self.control_path, *self._expected) if _key(path)}
        with contextlib.suppress(OSError):  # unlistable, or deleted meanwhile
            present.update(e.path for e in os.scandir(self.runtime_dir)
                           if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode))
        for path in present:
            self._seen[path] = cc_pid
            self._misses.pop(path, None)
        for path in sorted(self._expected - present):
            pid, count = self._misses.get(path, (cc_pid, 0))
            if cc_pid is None or pid != cc_pid:
                self._misses.pop(path, None)  # clock-control (re)starting: it binds afresh
                continue
            count += 1
            self._misses[path] = (pid, count)
            # Bound by this clock-control and gone twice running: deleted. Never seen
            # from this one: give a slow start 6 s before calling it missing.
            if self._seen.get(path) == cc_pid and count >= 2:
                return f"socket {path} was deleted"
            if count >= 4:
                return f"socket {path} is missing (clock-control did not re-create it in 6 s)"
        self._expected.update(present)
        return None
