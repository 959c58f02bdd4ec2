"""RandomPool hands out the kernel's random bytes in slices, each byte once."""

from __future__ import annotations

import itertools

import pytest
from ntpd_py.workers.random_pool import RandomPool


def test_every_byte_is_handed_out_once_and_in_order() -> None:
    counter = itertools.count()
    reads: list[int] = []

    def source(n: int) -> bytes:
        reads.append(n)
        return bytes(next(counter) % 256 for _ in range(n))

    pool = RandomPool(source, block=64)
    out = b"".join(pool(16) for _ in range(8))  # two blocks' worth
    assert out == bytes(i % 256 for i in range(128)) and reads == [64, 64]
    assert len(pool(40)) == 40 and len(pool(40)) == 40  # the second one needs a new block
    assert reads == [64, 64, 64, 64]
    assert len(pool(100)) == 100 and reads[-1] == 100  # more than a block: read directly


def test_real_source_gives_distinct_nonces() -> None:
    pool = RandomPool()
    nonces = {pool(16) for _ in range(1000)}
    assert len(nonces) == 1000 and all(len(n) == 16 for n in nonces)


def test_peek_then_advance_hands_out_every_byte_once() -> None:
    counter = itertools.count()

    def source(n: int) -> bytes:  # distinct 4-byte words, so any reuse shows
        assert n % 4 == 0
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4))

    pool = RandomPool(source, block=64)
    used = b""
    for want, use in ((12, 4), (100, 100), (48, 0), (32, 32), (400, 8)):
        view = pool.peek(want)
        assert len(view) >= want
        used += bytes(view[:use])
        pool.advance(use)
    used += pool(8)
    words = [used[i : i + 4] for i in range(0, len(used), 4)]
    assert len(words) == 38 and len(set(words)) == len(words)
    with pytest.raises(ValueError):
        pool.advance(10**6)
