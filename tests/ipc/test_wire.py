"""ipc/wire.py's pydantic-free CtlReply checker agrees with the pydantic models it mirrors."""

from __future__ import annotations

from typing import Any

import pytest
from ntpd_py.ipc import wire
from ntpd_py.ipc.framing import decode, encode
from ntpd_py.ipc.messages import (
    SCHEMA_VERSION,
    ClockStateMsg,
    CtlReply,
    CtlRequest,
    MsgType,
    ProcessInfo,
    SourceView,
    SystemView,
)
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

MIRRORS: list[tuple[type[BaseModel], wire.Fields]] = [
    (SystemView, wire.SYSTEM_VIEW_FIELDS),
    (SourceView, wire.SOURCE_VIEW_FIELDS),
    (ClockStateMsg, wire.CLOCK_STATE_FIELDS),
    (ProcessInfo, wire.PROCESS_INFO_FIELDS),
    (CtlReply, wire.CTL_REPLY_FIELDS),
]


def sample_reply() -> CtlReply:
    system = SystemView(
        synchronized=True, clock_backend="simulated", offset_s=1.5e-6,
        offset_uncertainty_s=2e-7, frequency_ppm=-12.5, frequency_uncertainty_ppm=0.01,
        stratum=1, reference_id=int.from_bytes(b"PHC\0", "big"), root_delay_s=0.0,
        root_dispersion_s=1e-6, leap=0, precision_log2=-20, steps=1,
        accumulated_steps_s=0.25, last_update_age_s=0.4, reference_time_ns=10**18)
    source = SourceView(
        source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0", resolved=None, state="*",
        worker_state="running", detail="", offset_s=-3e-7, uncertainty_s=5e-8, delay_s=None,
        last_offset_s=1e-7, poll_log2=0, reach=0o377, samples=42, last_sample_age_s=0.5,
        stratum=0, reference_id=0, root_delay_s=None, root_dispersion_s=None,
        method="PTP_SYS_OFFSET_PRECISE", last_window_s=2e-8, counters={"read_errors": 0},
        ipc_dropped=3)
    process = ProcessInfo(
        worker_id="clock-control", role="clock-control", pid=1234, user="ntpd-py",
        state="running", uptime_s=12.0, restarts=1, rss_bytes=20 * 2**20, cpu_percent=0.3,
        last_exit="killed by SIGKILL", cpu_seconds=0.5, link_malformed=0, link_dropped=2)
    return CtlReply(
        ok=True, clock=ClockStateMsg(mono_ns=5, realtime_ns=6, system=system, sources=[source]),
        processes=[process], ipc={"stale": 1},
        servers={"127.0.0.1:123": {"received": 10, "accepted": 9}})


@pytest.mark.parametrize(("model", "fields"), MIRRORS, ids=lambda m: getattr(m, "__name__", ""))
def test_fields_mirror_the_model(model: type[BaseModel], fields: wire.Fields) -> None:
    assert list(fields) == list(model.model_fields)
    for name, info in model.model_fields.items():
        _check, default = fields[name]
        if info.is_required():
            assert default is wire._REQUIRED, name
        elif info.default_factory is not None:
            assert default is info.default_factory, name
        else:
            assert info.default is not PydanticUndefined and default == info.default, name


def test_constants_and_request_bytes_match_the_models() -> None:
    assert wire.SCHEMA_VERSION == SCHEMA_VERSION
    assert (wire.CTL_REQUEST, wire.CTL_REPLY) == (MsgType.CTL_REQUEST, MsgType.CTL_REPLY)
    for command in ("status", "sources", "workers"):
        assert wire.encode_ctl_request(command) == encode(CtlRequest(command=command))  # type: ignore[arg-type]


def test_decoded_reply_is_the_models_dump() -> None:
    reply = sample_reply()
    assert wire.decode_ctl_reply(encode(reply), 1 << 24) == reply.model_dump()
    minimal = CtlReply(ok=False, error="refused")
    frame = encode(minimal)
    assert wire.decode_ctl_reply(frame, 1 << 24) == minimal.model_dump()
    # defaults are filled in as the model fills them
    import msgpack

    bare = msgpack.packb([1, int(MsgType.CTL_REPLY), {"ok": True}], use_bin_type=True)
    assert wire.decode_ctl_reply(bare, 1 << 24) == CtlReply(ok=True).model_dump()


def test_envelope_errors_are_refused() -> None:
    import msgpack

    frame = encode(sample_reply())
    with pytest.raises(wire.MalformedMessage, match="oversized"):
        wire.decode_ctl_reply(frame, 16)
    with pytest.raises(wire.MalformedMessage, match="unexpected-type"):
        wire.decode_ctl_reply(encode(CtlRequest(command="status")), 1 << 24)
    with pytest.raises(wire.MalformedMessage, match="wrong-version"):
        wire.decode_ctl_reply(msgpack.packb([2, 12, {"ok": True}]), 1 << 24)
    with pytest.raises(wire.MalformedMessage, match="undecodable"):
        wire.decode_ctl_reply(b"\xc1", 1 << 24)


ODD_VALUES: list[Any] = [None, True, 0, -1, 1, 17, 2**32, -(2**63), 1.5, float("nan"), "", "x",
                         "*x", "y" * 5000, [], [1], {}, {"k": 1}, {"k": "v"}]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field path of the dumped reply (into the first item of each list)."""
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list) and data:
        out += _paths(data[0], (*prefix, 0))
    return out


def _with(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    import copy

    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def test_accepts_and_refuses_what_the_model_does() -> None:
    """Every field of a full reply set to odd values: both accept it or both refuse it."""
    import msgpack

    base = sample_reply().model_dump()
    checked = 0
    for path in _paths(base):
        for value in ODD_VALUES:
            payload = _with(base, path, value)
            try:
                CtlReply.model_validate(payload)
                model_ok = True
            except ValidationError:
                model_ok = False
            frame = msgpack.packb([1, int(MsgType.CTL_REPLY), payload], use_bin_type=True)
            try:
                decode(frame, {MsgType.CTL_REPLY}, max_size=1 << 24)
                wire.decode_ctl_reply(frame, 1 << 24)
                wire_ok = True
            except wire.MalformedMessage:
                wire_ok = False
            assert wire_ok == model_ok, (path, value, model_ok)
            checked += 1
    assert checked > 1000
