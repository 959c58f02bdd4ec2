"""Types of the C NTS engine (workers/_nts_fast.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

SKIP: int
PY: int
AUTHENTICATED: int
NAK: int
DROP: int
RANDOM_PER_REQUEST: int

class Engine:
    def __init__(self, keys: Sequence[tuple[int, bytes]]) -> None: ...
    def serve(self, data: Buffer, stride: int, lengths: Buffer, rx: Buffer, templates: Buffer,
              out: Buffer, out_stride: int, random: Buffer, tx_ntp: int, verdicts: Buffer,
              names: Buffer, name_stride: int, namelen: int, iov: Buffer, hdr: Buffer,
              judge_only: bool = False) -> tuple[list[int], int]: ...

def siv_seal(key: Buffer, ad: Buffer, nonce: Buffer, plaintext: Buffer) -> bytes: ...
def siv_open(key: Buffer, ad: Buffer, nonce: Buffer, sealed: Buffer) -> bytes | None: ...
