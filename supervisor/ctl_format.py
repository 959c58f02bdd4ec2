"""`ntpctl` output: plain text for people, a versioned JSON document for machines.

JSON schema (version 1), the same document for every command, with only the
parts that command shows: ``{"schema": 1, "command": ..., "clock": {...},
"sources": [...], "processes": [...], "ipc_dropped": {...}}``. Times are
seconds (floats), frequencies ppm, ``poll_log2`` log2 seconds, reference ids
both as integer and text. Every process appears with its ``pid`` (null while
it is being restarted).

Both work on the reply as plain data (the msgpack payload, checked by
:mod:`ntpd_py.ipc.wire`), so `ntpctl` never imports pydantic; a pydantic
``CtlReply`` is accepted too and dumped first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ntpd_py.ipc.messages import CtlReply
    from pydantic import BaseModel

Data = Mapping[str, Any]

__all__ = ["JSON_SCHEMA_VERSION", "refid_text", "reply_json", "text_output"]

JSON_SCHEMA_VERSION = 1
_LEAP = {0: "none", 1: "insert second", 2: "delete second", 3: "not synchronised"}


def refid_text(refid: int, stratum: int) -> str:
    raw = refid.to_bytes(4, "big")
    if stratum <= 1 or stratum >= 16:
        text = raw.rstrip(b"\0").decode("ascii", "replace")
        return text if text.isprintable() else f"{refid:08X}"
    return ".".join(str(b) for b in raw)


def _s(value: float | None, width: int = 12) -> str:
    if value is None:
        return "-".rjust(width)
    magnitude = abs(value)
    if magnitude < 1e-6:
        text = f"{value * 1e9:+.0f}ns"
    elif magnitude < 1e-3:
        text = f"{value * 1e6:+.1f}us"
    elif magnitude < 1:
        text = f"{value * 1e3:+.3f}ms"
    else:
        text = f"{value:+.3f}s"
    return text.rjust(width)


def _poll(log2: int) -> str:
    seconds = 2.0**log2
    return f"{seconds:g}s"


def _data(obj: Any) -> Any:
    """Plain data of a pydantic model (a CtlReply, SystemView, ...); plain data as it is."""
    dump = getattr(obj, "model_dump", None)
    return obj if dump is None else dump()


def _clock_lines(view: Data | BaseModel) -> list[str]:
    system: Data = _data(view)
    state = "synchronized" if system["synchronized"] else "NOT synchronized"
    last = system["last_update_age_s"]
    age = "never" if last is None else f"{last:.1f}s ago"
    stopped = ([f"  STEERING STOPPED: {system['steering_stopped']}"]
               if system["steering_stopped"] else [])
    return [
        f"Clock: {state} ({system['clock_backend']} backend)",
        *stopped,
        f"  offset estimate  {_s(system['offset_s']).strip()} ± "
        f"{_s(system['offset_uncertainty_s']).strip().lstrip('+')}"
        if system["offset_s"] is not None
        else "  offset estimate  none yet",
        f"  frequency        {system['frequency_ppm']:+.3f} ppm ± "
        f"{system['frequency_uncertainty_ppm']:.3f} ppm",
        f"  stratum          {system['stratum']}, reference "
        f"{refid_text(system['reference_id'], system['stratum'])}, "
        f"leap {_LEAP[system['leap']]}",
        f"  root delay       {system['root_delay_s'] * 1e3:.3f} ms, root dispersion "
        f"{system['root_dispersion_s'] * 1e3:.3f} ms",
        f"  steps            {system['steps']} (accumulated "
        f"{system['accumulated_steps_s']:.6f} s); last update {age}",
    ]


def _source_lines(sources: Sequence[Data | BaseModel]) -> list[str]:
    lines = [
        "Sources:  (state: * selected, + combined, - not combined, x falseticker, "
        "~ too variable, ? unusable)",
        f"S {'Name':<28} {'Kind':<4} {'Reach':>5} {'Poll':>6} {'Offset':>12} {'±Unc':>11} "
        f"{'Delay':>11} {'Age':>6}  Status",
    ]
    for src in map(_data, sources):
        last = src["last_sample_age_s"]
        age = "-" if last is None else f"{last:.0f}s"
        name = src["name"] if len(src["name"]) <= 28 else "…" + src["name"][-27:]
        status = src["worker_state"] + (f": {src['detail']}" if src["detail"] else "")
        if src["method"]:
            status += f" [{src['method']}"
            if src["last_window_s"] is not None:
                status += f", window {src['last_window_s'] * 1e9:.0f}ns"
            status += "]"
        if src.get("nts"):
            status += (f" [nts, {src['authenticated']} authenticated, "
                       f"{src['cookies']} cookies]")
        if src["ipc_dropped"]:
            status += f" ({src['ipc_dropped']} ipc dropped)"
        lines.append(
            f"{src['state']} {name:<28} {src['kind']:<4} {src['reach']:>5o} "
            f"{_poll(src['poll_log2']):>6} {_s(src['offset_s'])} "
            f"{_s(src['uncertainty_s'], 11)} {_s(src['delay_s'], 11)} {age:>6}  {status}"
        )
    if not sources:
        lines.append("  (no sources configured)")
    return lines


def _process_lines(processes: list[Data]) -> list[str]:
    lines = [
        f"{'Role':<14} {'Id':<28} {'PID':>7} {'User':<10} {'State':<9} {'Uptime':>8} "
        f"{'Restarts':>8} {'RSS':>8} {'CPU%':>5}  Last exit"
    ]
    for proc in map(_data, processes):
        uptime = "-" if proc["uptime_s"] is None else f"{proc['uptime_s']:.0f}s"
        rss = "-" if proc["rss_bytes"] is None else f"{proc['rss_bytes'] / 2**20:.1f}M"
        cpu = "-" if proc["cpu_percent"] is None else f"{proc['cpu_percent']:.1f}"
        pid = "-" if proc["pid"] is None else str(proc["pid"])
        link = [f"{n} {what}" for n, what in ((proc["link_dropped"], "link frames dropped"),
                                              (proc["link_malformed"], "link frames malformed"))
                if n]
        lines.append(
            f"{proc['role']:<14} {proc['worker_id'][:28]:<28} {pid:>7} {proc['user'][:10]:<10} "
            f"{proc['state']:<9} {uptime:>8} {proc['restarts']:>8} {rss:>8} {cpu:>5}  "
            f"{proc['last_exit']}" + (f" ({', '.join(link)})" if link else "")
        )
    return lines


def text_output(reply: CtlReply | Data, command: str) -> str:
    data = _data(reply)
    clock = data["clock"]
    parts: list[str] = []
    if clock is not None and command == "status":
        parts += [*_clock_lines(clock["system"]), ""]
    if clock is not None and command in ("status", "sources"):
        parts += [*_source_lines(list(clock["sources"])), ""]
    if command in ("status", "workers"):
        parts += ["Processes:" if command == "status" else ""] if command == "status" else []
        parts += _process_lines(list(data["processes"]))
        for listen, c in (data["servers"].items() if command == "status" else []):
            if listen.startswith("nts-ke "):  # an NTS-KE worker's counters
                parts.append(
                    f"NTS-KE {listen.removeprefix('nts-ke ')}: key exchanges completed "
                    f"{c.get('completed', 0)}, accepted {c.get('accepted', 0)}, refused (all "
                    f"slots taken) {c.get('refused_full', 0)}, timed out "
                    f"{c.get('timed_out', 0)}, failed {c.get('failed', 0)}, errors sent "
                    f"{c.get('errors_sent', 0)}, open now {c.get('open_connections', 0)}")
                continue
            parts.append(
                f"Server {listen}: received {c.get('received', 0)}, accepted "
                f"{c.get('accepted', 0)}, denied {c.get('denied', 0)}, ignored "
                f"{c.get('ignored', 0)}, rate-limited {c.get('rate_limited', 0)}, send errors "
                f"{c.get('response_send_errors', 0)}"
                + (f"; NTS received {c['nts_received']}, authenticated "
                   f"{c.get('nts_accepted', 0)}, NAK {c.get('nts_nak', 0)}, denied "
                   f"{c.get('nts_denied', 0)}, rate-limited {c.get('nts_rate_limited', 0)}, "
                   f"dropped {c.get('nts_dropped', 0)}" if "nts_received" in c else ""))
        if data["ipc"] and command == "status":
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(data["ipc"].items()))
            parts += [f"IPC frames dropped: {dropped}"]
    return "\n".join(parts).rstrip() + "\n"


def reply_json(reply: CtlReply | Data, command: str) -> dict[str, Any]:
    data = _data(reply)
    clock = data["clock"]
    document: dict[str, Any] = {"schema": JSON_SCHEMA_VERSION, "command": command}
    if clock is not None and command == "status":
        system = dict(clock["system"])
        system["reference"] = refid_text(system["reference_id"], system["stratum"])
        document["clock"] = system
    if clock is not None and command in ("status", "sources"):
        document["sources"] = [dict(src) for src in clock["sources"]]
    if command in ("status", "workers"):
        document["processes"] = [dict(proc) for proc in data["processes"]]
    if command == "status":
        document["ipc_dropped"] = dict(data["ipc"])
        document["servers"] = [
            {"listen": listen, "counters": dict(c)} for listen, c in data["servers"].items()]
    return document
