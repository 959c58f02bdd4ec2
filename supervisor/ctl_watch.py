"""`ntpctl watch`: the clock and its sources, live, from clock-control's state feed.

It first asks the control socket for the status (so a daemon that is not
running, or a socket the user may not reach, gives the same message and exit
code as every other `ntpctl` command), then subscribes to the `state` PUB
feed, which clock-control publishes every second and on every clock update.

On a terminal the view is redrawn in place with rich's Live display — no
alternate screen, so it behaves over ssh, in tmux and in a scrollback — and
Ctrl-C ends it with exit status 0 and the cursor restored. Not on a terminal,
each update is printed as a plain-text block. `--json` prints one JSON
document per update and line: the `ntpctl status --json` document's `clock`
and `sources` (schema 1), with `"command": "watch"` and the publication time.
If the feed goes quiet, the control socket is probed again: a daemon that
went away ends the watch with exit status 69. While the supervisor is alive but
clock-control is not answering (it is being restarted), the watch says so
(on stderr when not on a terminal) and keeps going: ZeroMQ reconnects to the
restarted feed by itself, and the updates resume.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

from ntpd_py.core.config import DEFAULT_CONFIG_PATH, Config
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CONFIG, EX_PROTOCOL, EX_UNAVAILABLE
from ntpd_py.ipc.endpoints import Endpoints
from ntpd_py.ipc.framing import MalformedMessage, decode
from ntpd_py.ipc.messages import ClockStateMsg, CtlReply, MsgType, SourceView, SystemView

from .config_file import load_config_file
from .ctl_client import CtlError, _probe, request
from .ctl_format import _clock_lines, _s, _source_lines, refid_text, reply_json
from .pidfile import supervisor_pid

if TYPE_CHECKING:  # rich is imported only when a terminal shows the live view
    from rich.console import Group, RenderableType
    from rich.live import Live
    from rich.table import Table

__all__ = ["watch", "watch_document"]

DEFAULT_RUNTIME_DIR = "/run/ntpd-py"
QUIET_PROBE_S = 5.0  # no update for this long: check that the daemon is still there
STATE_COLOURS = {"*": "bold green", "+": "green", "-": "yellow", "x": "bold red",
                 "~": "magenta", "?": "dim"}


def _paths(config_path: str | None) -> tuple[str, str, str]:
    """(control socket, state feed, runtime directory) of the daemon the configuration
    describes."""
    if config_path is None and not os.path.exists(DEFAULT_CONFIG_PATH):
        return (os.path.join(DEFAULT_RUNTIME_DIR, "observe"),
                Endpoints(DEFAULT_RUNTIME_DIR, "").state, DEFAULT_RUNTIME_DIR)
    try:
        config: Config = load_config_file(config_path)
    except ConfigError as exc:
        first = exc.issues[0].render() if exc.issues else "invalid configuration"
        raise CtlError(f"cannot read the configuration: {first}", EX_CONFIG) from None
    runtime_dir = config.daemon.runtime_dir
    return config.control_socket_path(), Endpoints(runtime_dir, "").state, runtime_dir


def _restarting(control: str, runtime_dir: str) -> int | None:
    """None when clock-control answers; the supervisor's pid while it restarts
    clock-control; CtlError (69) when the daemon is gone."""
    try:
        _probe(control)
        return None
    except CtlError as exc:
        if exc.code != EX_UNAVAILABLE:
            raise
        pid = supervisor_pid(runtime_dir)
        if pid is None:
            raise
        return pid


def watch_document(state: ClockStateMsg) -> dict[str, Any]:
    """The `ntpctl status --json` shape for what the feed carries (clock, sources)."""
    document = reply_json(CtlReply(ok=True, clock=state), "status")
    del document["processes"], document["ipc_dropped"]
    document["command"] = "watch"
    document["realtime_ns"] = state.realtime_ns
    return document


# -- the terminal view ------------------------------------------------------------------------


def _clock_table(system: SystemView) -> Table:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    sync = ("[bold green]synchronized" if system.synchronized else "[bold red]NOT synchronized")
    table.add_row("Clock", f"{sync}[/] ({system.clock_backend} backend)")
    if system.offset_s is not None:
        unc = _s(system.offset_uncertainty_s).strip().lstrip("+")
        table.add_row("Offset", f"{_s(system.offset_s).strip()} ± {unc}")
    table.add_row("Frequency", f"{system.frequency_ppm:+.3f} ppm ± "
                               f"{system.frequency_uncertainty_ppm:.3f} ppm")
    table.add_row("Stratum", f"{system.stratum}, reference "
                             f"{refid_text(system.reference_id, system.stratum)}")
    table.add_row("Root", f"delay {system.root_delay_s * 1e3:.3f} ms, dispersion "
                          f"{system.root_dispersion_s * 1e3:.3f} ms")
    age = "never" if system.last_update_age_s is None else f"{system.last_update_age_s:.1f} s ago"
    table.add_row("Steps", f"{system.steps} (accumulated {system.accumulated_steps_s:.6f} s); "
                           f"last update {age}")
    return table


def _sources_table(sources: list[SourceView]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("S", "left"), ("Name", "left"), ("Kind", "left"), ("Reach", "right"), ("Poll", "right"),
        ("Offset", "right"), ("±Unc", "right"), ("Delay", "right"), ("Age", "right"),
        ("Status", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for src in sources:
        status = src.worker_state + (f": {src.detail}" if src.detail else "")
        if src.method:
            window = ("" if src.last_window_s is None
                      else f", window {src.last_window_s * 1e9:.0f}ns")
            status += f" [{src.method}{window}]"
        age = "-" if src.last_sample_age_s is None else f"{src.last_sample_age_s:.0f}s"
        cells = [src.name, src.kind, f"{src.reach:o}", f"{2.0**src.poll_log2:g}s",
                 _s(src.offset_s).strip(), _s(src.uncertainty_s).strip().lstrip("+"),
                 _s(src.delay_s).strip(), age, status]
        # Text, not markup: a name or a status may contain "[...]".
        table.add_row(Text(src.state, style=STATE_COLOURS.get(src.state, "")),
                      *(Text(cell) for cell in cells))
    return table


def _view(state: ClockStateMsg | None, note: str) -> Group:
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = []
    if state is not None:
        parts += [_clock_table(state.system), Text(""), _sources_table(list(state.sources))]
        if not state.sources:
            parts.append(Text("(no sources configured)", style="dim"))
    stamp = time.strftime("%H:%M:%S")
    parts += [Text(""), Text(f"{stamp}  {note}  ·  Ctrl-C to quit", style="dim")]
    return Group(*parts)


# -- the loop ------------------------------------------------------------------------------


class _Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.live: Live | None = None
        if not as_json and sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(), auto_refresh=False, screen=False,
                             transient=False, redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> _Output:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()  # shows the cursor again; the last view stays on screen

    def show(self, state: ClockStateMsg | None, note: str, fresh: bool) -> None:
        if self.live is not None:
            self.live.update(_view(state, note), refresh=True)
        elif fresh and state is not None:
            if self.as_json:
                sys.stdout.write(json.dumps(watch_document(state)) + "\n")
            else:
                lines = [f"--- {time.strftime('%H:%M:%S')}", *_clock_lines(state.system), ""]
                lines += _source_lines(list(state.sources))
                sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()


def _say(out: _Output, text: str) -> None:
    """A note about the connection; on stderr unless the live view shows it."""
    if out.live is None:
        print(f"ntpctl: {text}", file=sys.stderr, flush=True)


def _follow(control: str, feed_path: str, runtime_dir: str, out: _Output,
            first: ClockStateMsg | None) -> int:
    import zmq
    from ntpd_py.ipc.endpoints import connect_sub

    _probe(feed_path)  # the same not-running / permission messages for the feed
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    feed = connect_sub(ctx, feed_path)
    poller = zmq.Poller()
    poller.register(feed.pollable(), zmq.POLLIN)
    state, last_update = first, time.monotonic()
    restarting = False
    out.show(state, "waiting for the next update", fresh=True)
    try:
        while True:
            poller.poll(1000)
            latest = None
            while (item := feed.recv()) is not None:
                latest = item[1]
            quiet = time.monotonic() - last_update
            if latest is not None:
                try:
                    message = decode(latest, {MsgType.CLOCK_STATE}, max_size=1 << 22)
                except MalformedMessage as exc:
                    raise CtlError(f"unexpected data on {feed_path}: {exc}", EX_PROTOCOL) from None
                assert isinstance(message, ClockStateMsg)
                state, last_update = message, time.monotonic()
                if restarting:
                    restarting = False
                    _say(out, "clock-control is back; updates resumed")
                out.show(state, "live", fresh=True)
            else:
                note = f"no update for {quiet:.0f} s"
                if quiet >= QUIET_PROBE_S:
                    # Raises CtlError(69) when the daemon is gone.
                    supervisor = _restarting(control, runtime_dir)
                    if supervisor is not None:
                        note = (f"clock-control is not answering (restarting? supervisor pid "
                                f"{supervisor}); waiting, {quiet:.0f} s without update")
                        if not restarting:
                            _say(out, note)
                        restarting = True
                out.show(state, note, fresh=False)
    finally:
        feed.close()
        ctx.term()


def watch(config_path: str | None, as_json: bool) -> int:
    """Run until Ctrl-C (0) or until the daemon goes away (69); other errors as `status`."""
    try:
        control, feed_path, runtime_dir = _paths(config_path)
        reply = request(control, "status")
        with _Output(as_json) as out:
            return _follow(control, feed_path, runtime_dir, out, reply.clock)
    except CtlError as exc:
        if as_json:
            print(json.dumps({"schema": 1, "command": "watch", "error": str(exc),
                              "exit_code": exc.code}), flush=True)
        print(f"ntpctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`ntpctl watch --json | head -1`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
