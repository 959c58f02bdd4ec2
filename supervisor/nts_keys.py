"""The NTS cookie keyset, owned by the supervisor: loaded or created, rotated, stored.

Every NTP-server process and NTS-KE worker must open the cookies every other one
made, and none of them may read or write `key-storage-path` (a compromised worker
could then forge cookies for ever). So the supervisor (root) alone loads the keyset
(or makes one: in memory only without `[keyset] key-storage-path`, as ntpd-rs),
rotates it every `key-rotation-interval`, rewrites the file atomically (0600), and
hands the current keys to each such worker at fork and over its link after every
rotation (`NtsKeyset`). A daemon with a `[[server]]` always has a keyset: an NTS
request with a cookie from elsewhere gets an NTS NAK.
"""

from __future__ import annotations

import logging
import os
import time

from ntpd_py.core.config import Config, KeysetConfig
from ntpd_py.core.exit_codes import EX_CANTCREAT
from ntpd_py.core.nts_cookies import ServerKeySet
from ntpd_py.plumbing.nts_keyset_store import load_or_create, rotate_and_save

from .setup import StartupError

__all__ = ["NTS_ROLES", "KeysetOwner", "needs_keyset"]

NTS_ROLES = ("server", "nts-ke")


def needs_keyset(config: Config) -> bool:
    return bool(config.server) or bool(config.nts_ke_server)


class KeysetOwner:
    def __init__(self, config: KeysetConfig | None, log: logging.Logger) -> None:
        settings = config or KeysetConfig()
        self.path = settings.key_storage_path
        self.interval_s = float(settings.key_rotation_interval)
        self.stale_key_count = settings.stale_key_count
        self.log = log
        try:
            loaded = load_or_create(self.path, self.interval_s, self.stale_key_count)
        except OSError as exc:
            raise StartupError(f'[keyset] key-storage-path = "{self.path}": cannot write the '
                               f"keyset: {exc.strerror or exc}", EX_CANTCREAT) from None
        if loaded.problem:
            log.warning("[keyset] %s", loaded.problem)
        self.keyset: ServerKeySet = loaded.keyset
        where = self.path or "memory only (no [keyset] key-storage-path)"
        log.info("NTS cookie keys: %s (%s, %d key%s, rotated every %g s)", where,
                 "new" if loaded.created else "loaded", len(self.keyset.keys),
                 "" if len(self.keyset.keys) == 1 else "s", self.interval_s)

    def current(self) -> bytes:
        return self.keyset.to_bytes()

    def rotate_if_due(self, now_real_ns: int | None = None) -> bool:
        """Rotate (and store) when the interval has passed; True if the keys changed.

        A file that cannot be written is logged: the new keys are used anyway (the
        servers must agree), and the file is rewritten at the next rotation.
        """
        now = time.time_ns() if now_real_ns is None else now_real_ns
        try:
            return rotate_and_save(self.keyset, self.path, now, os.urandom)
        except OSError as exc:
            self.log.error('[keyset] key-storage-path = "%s": cannot store the rotated keys: '
                           "%s (the servers use them anyway)", self.path, exc.strerror or exc)
            return True
