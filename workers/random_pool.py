"""Random bytes for NTS replies, read from the kernel a block at a time.

An NTS reply needs 16 random bytes for its authenticator's nonce and 16 per fresh
cookie: three ``getrandom`` calls per reply when taken one by one, each costing
more than the Python around it. :class:`RandomPool` reads 4 KiB at once and hands it
out in slices, every byte once. The bytes are the kernel's CSPRNG output, so a
nonce is as unpredictable as before; the pool is this worker's memory, which
already holds the keys the nonces protect.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["RandomPool"]

BLOCK_BYTES = 4096


class RandomPool:
    """``pool(n)``: ``n`` fresh random bytes, as ``os.urandom(n)``. For a consumer that
    learns only afterwards how much it used (the C NTS engine): :meth:`peek` then
    :meth:`advance`."""

    __slots__ = ("_block", "_buffer", "_position", "_source")

    def __init__(self, source: Callable[[int], bytes] = os.urandom,
                 block: int = BLOCK_BYTES) -> None:
        self._source = source
        self._block = block
        self._buffer = b""
        self._position = 0

    def __call__(self, count: int) -> bytes:
        if count > self._block:
            return self._source(count)
        start = self._position
        if start + count > len(self._buffer):
            self._buffer, start = self._source(self._block), 0
        self._position = start + count
        return self._buffer[start : start + count]

    def peek(self, count: int) -> memoryview:
        """At least ``count`` unused bytes, without using them up (see :meth:`advance`)."""
        if len(self._buffer) - self._position < count:
            # a larger block than one batch's worst case: most batches use a fraction
            self._buffer, self._position = self._source(max(self._block, 8 * count)), 0
        return memoryview(self._buffer)[self._position :]

    def advance(self, count: int) -> None:
        """Mark ``count`` bytes of the last :meth:`peek` used; they are never handed out again."""
        if not 0 <= count <= len(self._buffer) - self._position:
            raise ValueError(f"advance({count}) past the peeked bytes")
        self._position += count
