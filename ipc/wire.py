"""The frame envelope, and ntpctl's request and reply, without pydantic.

:mod:`ntpd_py.ipc.framing` validates every message with its pydantic model;
importing pydantic and building the models takes longer than the whole of an
`ntpctl status` may (a few times a bare interpreter start). So this module
holds what framing and the CLI share: unpacking the msgpack envelope with
bounded limits, and a compact checker for the one message ntpctl receives,
``CtlReply``. The checker mirrors the models of :mod:`ntpd_py.ipc.messages`
(field names, order, defaults, types, ranges, lengths); a test compares it with
them field by field so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

__all__ = [
    "CTL_REPLY",
    "CTL_REPLY_FIELDS",
    "CTL_REQUEST",
    "DEFAULT_MAX_FRAME",
    "SCHEMA_VERSION",
    "MalformedMessage",
    "decode_ctl_reply",
    "encode_ctl_request",
    "unpack_frame",
]

SCHEMA_VERSION = 1  # messages.SCHEMA_VERSION (a test checks they agree)
CTL_REQUEST = 11  # messages.MsgType.CTL_REQUEST
CTL_REPLY = 12  # messages.MsgType.CTL_REPLY
DEFAULT_MAX_FRAME = 64 * 1024


class MalformedMessage(Exception):
    """A frame that is not a valid message for this receiver; ``reason`` is a short tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def unpack_frame(frame: bytes, max_size: int = DEFAULT_MAX_FRAME) -> tuple[Any, Any]:
    """(type code, payload) of a frame whose size, encoding and schema version are right."""
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
    return type_code, payload


def encode_ctl_request(command: str) -> bytes:
    """The bytes of ``encode(CtlRequest(command=command))``."""
    packed: bytes = msgpack.packb([SCHEMA_VERSION, CTL_REQUEST, {"command": command}],
                                  use_bin_type=True)
    return packed


# -- the checker --------------------------------------------------------------------------
# A check takes a value and returns it (normalised: a table with its defaults filled
# in, in field order) or raises _Invalid with what was expected.


class _Invalid(Exception):
    def __init__(self, where: list[str], message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


Check = Callable[[Any], Any]
_REQUIRED = object()


def _int(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid([], "expected an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Invalid([], f"expected {low}..{high}")
        return value
    return check


def _float(value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Invalid([], "expected a number")
    return float(value)


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _Invalid([], "expected a boolean")
    return value


def _str(max_length: int, min_length: int = 0) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise _Invalid([], "expected a string")
        if not min_length <= len(value) <= max_length:
            raise _Invalid([], f"expected {min_length}..{max_length} characters")
        return value
    return check


def _literal(*choices: object) -> Check:
    def check(value: Any) -> Any:
        # as pydantic's Literal (also strict): by equality, so True counts as 1
        if not isinstance(value, str | int | float) or value not in choices:
            raise _Invalid([], f"expected one of {choices}")
        return value
    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)
    return check


def _list(inner: Check, max_length: int) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _Invalid([], "expected a list")
        if len(value) > max_length:
            raise _Invalid([], f"expected at most {max_length} items")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(inner(item))
            except _Invalid as exc:
                raise _Invalid([str(index), *exc.where], exc.message) from None
        return out
    return check


def _dict(key: Check, inner: Check, max_length: int) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Invalid([], "expected a map")
        if len(value) > max_length:
            raise _Invalid([], f"expected at most {max_length} entries")
        out = {}
        for k, v in value.items():
            try:
                out[key(k)] = inner(v)
            except _Invalid as exc:
                raise _Invalid([str(k)[:64], *exc.where], exc.message) from None
        return out
    return check


Fields = dict[str, tuple[Check, Any]]  # name -> (check, default or _REQUIRED; a type: factory)


def _table(fields: Fields) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Invalid([], "expected a map")
        extra = set(value) - set(fields)
        if extra:
            raise _Invalid([str(sorted(map(str, extra))[0])[:64]], "extra field")
        out = {}
        for name, (inner, default) in fields.items():
            if name not in value:
                if default is _REQUIRED:
                    raise _Invalid([name], "missing field")
                out[name] = default() if isinstance(default, type) else default
                continue
            try:
                out[name] = inner(value[name])
            except _Invalid as exc:
                raise _Invalid([name, *exc.where], exc.message) from None
        return out
    return check


# The shapes of messages.py (Id, Text, Counters and the bounds are theirs).
_ID = _str(256, 1)
_TEXT = _str(4096)
_COUNTERS = _dict(_str(64), _int(), 64)
_R = _REQUIRED

SYSTEM_VIEW_FIELDS: Fields = {
    "synchronized": (_bool, _R),
    "clock_backend": (_literal("system", "observe", "simulated"), _R),
    "offset_s": (_optional(_float), _R),
    "offset_uncertainty_s": (_optional(_float), _R),
    "frequency_ppm": (_float, _R),
    "frequency_uncertainty_ppm": (_float, _R),
    "stratum": (_int(0, 16), _R),
    "reference_id": (_int(0, 2**32 - 1), _R),
    "root_delay_s": (_float, _R),
    "root_dispersion_s": (_float, _R),
    "leap": (_literal(0, 1, 2, 3), _R),
    "precision_log2": (_int(-64, 0), _R),
    "steps": (_int(0), _R),
    "accumulated_steps_s": (_float, _R),
    "last_update_age_s": (_optional(_float), _R),
    "reference_time_ns": (_optional(_int()), _R),
    "steering_stopped": (_TEXT, ""),
}
SOURCE_VIEW_FIELDS: Fields = {
    "source_id": (_ID, _R),
    "kind": (_literal("ntp", "ptp", "sock", "pps"), _R),
    "name": (_TEXT, _R),
    "resolved": (_optional(_TEXT), _R),
    "state": (_str(1), _R),
    "worker_state": (_TEXT, _R),
    "detail": (_TEXT, _R),
    "offset_s": (_optional(_float), _R),
    "uncertainty_s": (_optional(_float), _R),
    "delay_s": (_optional(_float), _R),
    "last_offset_s": (_optional(_float), _R),
    "poll_log2": (_int(), _R),
    "reach": (_int(), _R),
    "samples": (_int(), _R),
    "last_sample_age_s": (_optional(_float), _R),
    "stratum": (_int(), _R),
    "reference_id": (_int(), _R),
    "root_delay_s": (_optional(_float), _R),
    "root_dispersion_s": (_optional(_float), _R),
    "method": (_optional(_TEXT), _R),
    "last_window_s": (_optional(_float), _R),
    "counters": (_COUNTERS, _R),
    "ipc_dropped": (_int(), 0),
    "nts": (_bool, False),
    "authenticated": (_int(), 0),
    "cookies": (_optional(_int()), None),
}
CLOCK_STATE_FIELDS: Fields = {
    "mono_ns": (_int(), _R),
    "realtime_ns": (_int(), _R),
    "system": (_table(SYSTEM_VIEW_FIELDS), _R),
    "sources": (_list(_table(SOURCE_VIEW_FIELDS), 1024), _R),
}
PROCESS_INFO_FIELDS: Fields = {
    "worker_id": (_ID, _R),
    "role": (_literal("supervisor", "clock-control", "ptp", "ntp", "server", "metrics",
                      "sock", "pps", "nts-ke"), _R),
    "pid": (_optional(_int()), _R),
    "user": (_TEXT, _R),
    "state": (_TEXT, _R),
    "uptime_s": (_optional(_float), _R),
    "restarts": (_int(0), _R),
    "rss_bytes": (_optional(_int()), _R),
    "cpu_percent": (_optional(_float), _R),
    "last_exit": (_TEXT, ""),
    "cpu_seconds": (_optional(_float), None),
    "link_malformed": (_int(0), 0),
    "link_dropped": (_int(0), 0),
}
CTL_REPLY_FIELDS: Fields = {
    "ok": (_bool, _R),
    "error": (_TEXT, ""),
    "clock": (_optional(_table(CLOCK_STATE_FIELDS)), None),
    "processes": (_list(_table(PROCESS_INFO_FIELDS), 1024), list),
    "ipc": (_COUNTERS, dict),
    "servers": (_dict(_TEXT, _COUNTERS, 64), dict),
}
_CHECK_CTL_REPLY = _table(CTL_REPLY_FIELDS)


def decode_ctl_reply(frame: bytes, max_size: int) -> dict[str, Any]:
    """The payload of a CtlReply frame as plain data (what ``model_dump()`` would give)."""
    type_code, payload = unpack_frame(frame, max_size)
    if type_code != CTL_REPLY or isinstance(type_code, bool):
        raise MalformedMessage("unexpected-type", repr(type_code)[:40])
    if not isinstance(payload, dict):
        raise MalformedMessage("bad-payload", "expected a map")
    try:
        reply: dict[str, Any] = _CHECK_CTL_REPLY(payload)
    except _Invalid as exc:
        where = ".".join(exc.where)
        raise MalformedMessage("invalid", f"CTL_REPLY {where}: {exc.message}") from None
    return reply
