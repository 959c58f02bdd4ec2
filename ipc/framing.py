"""msgpack framing with a schema version: bytes on the wire <-> validated messages.

A frame is the msgpack array ``[SCHEMA_VERSION, msg_type, payload]``. Decoding
checks the size before unpacking, bounds msgpack's own limits, checks the
version and that the type is one the receiver accepts, then validates the
payload with the type's pydantic model. Anything else raises
:class:`MalformedMessage`; the receiver counts it, logs it once per rate
window and keeps running.
"""

from __future__ import annotations

from collections.abc import Collection

import msgpack
from pydantic import ValidationError

from .messages import REGISTRY, SCHEMA_VERSION, Message, MsgType

__all__ = ["DEFAULT_MAX_FRAME", "MalformedMessage", "decode", "encode"]

DEFAULT_MAX_FRAME = 64 * 1024


class MalformedMessage(Exception):
    """A frame that is not a valid message for this receiver; ``reason`` is a short tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def encode(message: Message) -> bytes:
    payload = message.model_dump(mode="python")
    packed: bytes = msgpack.packb([SCHEMA_VERSION, int(message.TYPE), payload], use_bin_type=True)
    return packed


def decode(
    frame: bytes,
    accept: Collection[MsgType] | None = None,
    max_size: int = DEFAULT_MAX_FRAME,
) -> Message:
    """Decode and validate one frame; raise MalformedMessage for anything else."""
    if len(frame) > max_size:
        raise MalformedMessage("oversized", f"{len(frame)} bytes > {max_size}")
    try:
        data = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=4096,
            max_map_len=4096,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage("undecodable", type(exc).__name__) from None
    if not isinstance(data, list) or len(data) != 3:
        raise MalformedMessage("bad-envelope", "expected [version, type, payload]")
    version, type_code, payload = data
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MalformedMessage("wrong-version", f"schema {version!r}, expected {SCHEMA_VERSION}")
    try:
        msg_type = MsgType(type_code)
    except (ValueError, TypeError):
        raise MalformedMessage("unknown-type", repr(type_code)[:40]) from None
    if isinstance(type_code, bool) or (accept is not None and msg_type not in accept):
        raise MalformedMessage("unexpected-type", msg_type.name)
    if not isinstance(payload, dict):
        raise MalformedMessage("bad-payload", "expected a map")
    try:
        return REGISTRY[msg_type].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedMessage("invalid", f"{msg_type.name} {where}: {first['msg']}") from None
