"""What the supervisor hands each NTP-server and NTS-KE worker it forks, in memory.

The supervisor (root) owns the NTS cookie keyset and alone reads and writes
`key-storage-path`; it also reads each `[[nts-ke-server]]`'s certificate chain and
private key (files a worker's uid cannot read). A forked worker takes the keyset
as it was at the fork and the TLS material of its own KE server here; later
rotations come over its link (`NtsKeyset`). Set in the child, just before its code
runs, so nothing a worker can write is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NtsHandover", "give", "take"]


@dataclass(frozen=True, slots=True)
class NtsHandover:
    keyset: bytes  # ServerKeySet.to_bytes()
    chain_pem: bytes = b""  # the NTS-KE worker's certificate chain
    key_pem: bytes = b""  # and its private key


_current: NtsHandover | None = None


def give(handover: NtsHandover | None) -> None:
    global _current
    _current = handover


def take() -> NtsHandover | None:
    """What the supervisor handed over (None when it handed nothing)."""
    return _current
