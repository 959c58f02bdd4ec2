"""The keyset file: created 0600, reloaded, rotated and rewritten atomically, replaced
when corrupt."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ntpd_py.core.nts_cookies import NtsKeys
from ntpd_py.plumbing.nts_keyset_store import load_or_create, rotate_and_save, save_atomically

DAY = 86400 * 10**9


def test_created_loaded_and_rotated(tmp_path: Path) -> None:
    path = str(tmp_path / "keyset")
    first = load_or_create(path, 86400, 7, now_ns=0)
    assert first.created and first.problem is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    cookie = first.keyset.make_cookie(keys, os.urandom(16))
    again = load_or_create(path, 86400, 7, now_ns=10)
    assert not again.created and again.keyset.open_cookie(cookie) == keys
    assert not rotate_and_save(again.keyset, path, now_ns=DAY - 1)
    assert rotate_and_save(again.keyset, path, now_ns=DAY)
    reloaded = load_or_create(path, 86400, 7, now_ns=DAY + 1)
    assert len(reloaded.keyset.keys) == 2 and reloaded.keyset.open_cookie(cookie) == keys
    assert sorted(os.listdir(tmp_path)) == ["keyset"]  # no temporary file left behind


def test_corrupt_file_is_replaced_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "keyset"
    path.write_bytes(b"{not json")
    loaded = load_or_create(str(path), 86400, 7, now_ns=0)
    assert loaded.created and loaded.problem is not None and "keyset" in loaded.problem
    assert load_or_create(str(path), 86400, 7, now_ns=0).created is False


def test_no_path_keeps_the_keyset_in_memory(tmp_path: Path) -> None:
    loaded = load_or_create(None, 86400, 7, now_ns=0)
    assert loaded.created
    assert not rotate_and_save(loaded.keyset, None, now_ns=1)
    assert os.listdir(tmp_path) == []


def test_save_replaces_whole_files(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    save_atomically(path, b"one")
    save_atomically(path, b"two")
    assert Path(path).read_bytes() == b"two"
