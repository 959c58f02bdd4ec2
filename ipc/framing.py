"""msgpack framing with a schema version: bytes on the wire <-> validated messages.

A frame is the msgpack array ``[SCHEMA_VERSION, msg_type, payload]``. Decoding
checks the size before unpacking, bounds msgpack's own limits, checks the
version and that the type is one the receiver accepts, then validates the
payload with the type's pydantic model. Anything else raises
:class:`MalformedMessage`; the receiver counts it, logs it once per rate
window and keeps running. The envelope is unpacked by :mod:`ntpd_py.ipc.wire`,
which ntpctl also uses without pydantic.
"""

from __future__ import annotations

from collections.abc import Collection

import msgpack
from pydantic import ValidationError

from .messages import REGISTRY, SCHEMA_VERSION, Message, MsgType
from .wire import DEFAULT_MAX_FRAME, MalformedMessage, unpack_frame

__all__ = ["DEFAULT_MAX_FRAME", "MalformedMessage", "decode", "encode"]


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
    type_code, payload = unpack_frame(frame, max_size)
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
