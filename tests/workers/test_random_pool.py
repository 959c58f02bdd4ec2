"""RandomPool hands out the kernel's random bytes in slices, each byte once."""

from __future__ import annotations

import itertools

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
