"""The NTS cookie keyset on disk (`[keyset] key-storage-path`): load, create, rotate, and
write atomically.

A keyset is written to a temporary file in the same directory (mode 0600, created
exclusively), flushed to disk, then renamed over the old one and the directory synced,
so a crash leaves either the old keys or the new ones, never half a file, and no other
user can read cookie keys at any moment. A file that cannot be read as a keyset is
replaced by a fresh keyset (clients holding old cookies get an NTS NAK and run a new
key exchange, which is the protocol's own recovery), and the caller is told why.
The format is :meth:`ntpd_py.core.nts_cookies.ServerKeySet.to_bytes`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ntpd_py.core.nts_cookies import KeysetError, ServerKeySet

__all__ = ["LoadedKeyset", "load_or_create", "rotate_and_save", "save_atomically"]

MAX_FILE_BYTES = 1 << 20  # a keyset of 1025 keys is ~80 KiB; more is not ours


@dataclass(frozen=True)
class LoadedKeyset:
    keyset: ServerKeySet
    created: bool  # no usable file: a fresh keyset was made (and saved)
    problem: str | None = None  # why an existing file was not used


def save_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so that readers see old or new only."""
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a crash of this same pid
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create(
    path: str | None,
    rotation_interval_s: float,
    stale_key_count: int,
    now_ns: int | None = None,
    random: Callable[[int], bytes] = os.urandom,
) -> LoadedKeyset:
    """The stored keyset, or a fresh one (saved when ``path`` is set)."""
    now = time.time_ns() if now_ns is None else now_ns
    problem = None
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise KeysetError(f"larger than {MAX_FILE_BYTES} bytes")
            keyset = ServerKeySet.from_bytes(data, rotation_interval_s, stale_key_count)
            return LoadedKeyset(keyset, created=False)
        except FileNotFoundError:
            pass
        except (OSError, KeysetError) as exc:
            problem = f"{path}: {exc}; a new keyset replaces it"
    keyset = ServerKeySet.generate(random, now, rotation_interval_s, stale_key_count)
    if path is not None:
        save_atomically(path, keyset.to_bytes())
    return LoadedKeyset(keyset, created=True, problem=problem)


def rotate_and_save(keyset: ServerKeySet, path: str | None, now_ns: int | None = None,
                    random: Callable[[int], bytes] = os.urandom) -> bool:
    """Rotate if due and store the result; True if a new key was made."""
    now = time.time_ns() if now_ns is None else now_ns
    rotated = keyset.rotate_if_due(now, random)
    if rotated and path is not None:
        save_atomically(path, keyset.to_bytes())
    return rotated
