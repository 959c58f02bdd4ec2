"""How `ntpctl` reaches the daemon: find the control socket, ask, wait at most 2 s.

Every failure is a one-line message with its own exit code (sysexits):
not running 69, permission denied 77, too busy to answer 75, a reply that is
not one 76, bad configuration 78. When the control socket is missing or dead
but the supervisor is alive (`<runtime-dir>/bus/supervisor.pid`, see
supervisor/pidfile.py), clock-control is being restarted: 75, not 69.

Nothing here imports pydantic or the configuration models on the way to an
answer: `ntpctl` finds the socket by peeking at two keys of the file and checks
the reply with :mod:`ntpd_py.ipc.wire` (:func:`request_data`). Only when the
daemon cannot be asked is the whole file validated (:func:`explain`): an
invalid configuration is then reported (78) as it was before ntpctl peeked, a
running daemon is still asked whatever the file became since it started.
:func:`request` gives the validated pydantic ``CtlReply`` to callers that want one.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

from ntpd_py.core.config_paths import DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CONFIG, EX_NOPERM, EX_PROTOCOL, EX_TEMPFAIL, EX_UNAVAILABLE
from ntpd_py.ipc.wire import MalformedMessage, decode_ctl_reply, encode_ctl_request

from .config_file import peek_control_paths

if TYPE_CHECKING:
    from ntpd_py.ipc.messages import CtlReply

__all__ = ["CtlError", "control_path", "explain", "locate", "request", "request_data"]

DEFAULT_CONTROL_PATH = DEFAULT_RUNTIME_DIR + "/observe"
MAX_REPLY = 16 * 1024 * 1024
TIMEOUT_MS = 2000


class CtlError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def control_path(config_path: str | None) -> str:
    """The control socket named by the configuration (observation-path)."""
    return locate(config_path)[0]


def locate(config_path: str | None) -> tuple[str, str]:
    """(control socket, runtime directory) named by the configuration."""
    if config_path is None and not os.path.exists(DEFAULT_CONFIG_PATH):
        return DEFAULT_CONTROL_PATH, DEFAULT_RUNTIME_DIR
    try:
        return peek_control_paths(config_path)
    except ConfigError as exc:
        raise _config_error(exc) from None


def _config_error(exc: ConfigError) -> CtlError:
    first = exc.issues[0].render() if exc.issues else "invalid configuration"
    more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
    return CtlError(f"cannot read the configuration: {first}{more}", EX_CONFIG)


def explain(config_path: str | None, exc: CtlError) -> CtlError:
    """The error to report when the daemon could not be asked: the configuration's own, if
    it is invalid (likely why the daemon is not running), else ``exc``.

    :func:`locate` only peeks at the keys that say where the daemon is; the whole file is
    checked here, on the failure path only, so that a daemon that answers is asked fast.
    """
    if exc.code == EX_CONFIG or (config_path is None and not os.path.exists(DEFAULT_CONFIG_PATH)):
        return exc
    from .config_file import load_config_file

    try:
        load_config_file(config_path)
    except ConfigError as config_exc:
        return _config_error(config_exc)
    return exc


def _probe(path: str) -> bool:
    """Tell 'not running' and 'no permission' apart before ZeroMQ hides both.

    Returns True when the daemon runs in --single-process mode (a SOCK_SEQPACKET
    control socket, no ZeroMQ).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CtlError(
            f"ntpd-py is not running (no control socket at {path})", EX_UNAVAILABLE
        ) from None
    except PermissionError:
        raise CtlError(
            f"permission denied reaching {path}: join the ntpd-py group or use sudo", EX_NOPERM
        ) from None
    if not stat.S_ISSOCK(mode):
        raise CtlError(f"{path} is not a socket", EX_UNAVAILABLE)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(TIMEOUT_MS / 1000)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:
            return True
        _connect_error(exc, path)
    finally:
        probe.close()
    return False


def _connect_error(exc: OSError, path: str) -> None:
    if isinstance(exc, PermissionError):
        raise CtlError(f"permission denied on {path}: join the ntpd-py group or use sudo",
                       EX_NOPERM) from None
    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
        raise CtlError(f"ntpd-py is not running (stale control socket at {path})",
                       EX_UNAVAILABLE) from None
    raise CtlError(f"cannot reach {path}: {exc.strerror}", EX_UNAVAILABLE) from None


def request(path: str, command: str, runtime_dir: str | None = None) -> CtlReply:
    """Ask the daemon; with ``runtime_dir``, a dead control socket of a daemon whose
    supervisor is alive is told apart from a daemon that is not running."""
    from ntpd_py.ipc.messages import CtlReply

    reply = request_data(path, command, runtime_dir)
    try:
        return CtlReply.model_validate(reply)
    except ValueError as exc:  # pydantic's ValidationError; wire.py's checks mirror the model
        raise CtlError(f"unexpected reply from ntpd-py: {str(exc)[:200]}", EX_PROTOCOL) from None


def request_data(path: str, command: str, runtime_dir: str | None = None) -> dict[str, Any]:
    """As :func:`request`, the reply as plain data (``CtlReply.model_dump()``'s shape)."""
    try:
        return _request(path, command)
    except CtlError as exc:
        if exc.code != EX_UNAVAILABLE or runtime_dir is None:
            raise
        from .pidfile import supervisor_pid  # logging: only when the daemon is not answering

        pid = supervisor_pid(runtime_dir)
        if pid is None:
            raise
        raise CtlError(
            f"ntpd-py is running (supervisor pid {pid}) but clock-control is not answering "
            f"at {path} (restarting?)", EX_TEMPFAIL) from None


def _request(path: str, command: str) -> dict[str, Any]:
    if _probe(path):
        frame = _single_process_request(path, command)
        return _decode_reply(frame)
    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY)
        sock.connect("ipc://" + path)
        sock.send(encode_ctl_request(command))
        try:
            frame = sock.recv()
        except zmq.Again:
            raise CtlError(
                f"ntpd-py did not answer within {TIMEOUT_MS / 1000:g} s (busy or hung)", EX_TEMPFAIL
            ) from None
    finally:
        sock.close(linger=0)
        ctx.term()
    return _decode_reply(frame)


def _single_process_request(path: str, command: str) -> bytes:
    from ntpd_py.ipc.unix_control import seqpacket_request

    try:
        return seqpacket_request(path, encode_ctl_request(command), TIMEOUT_MS / 1000)
    except TimeoutError:
        raise CtlError(f"ntpd-py did not answer within {TIMEOUT_MS / 1000:g} s (busy or "
                       "hung)", EX_TEMPFAIL) from None
    except OSError as exc:
        raise CtlError(f"cannot reach {path}: {exc.strerror}", EX_UNAVAILABLE) from None


def _decode_reply(frame: bytes) -> dict[str, Any]:
    try:
        reply = decode_ctl_reply(frame, MAX_REPLY)
    except MalformedMessage as exc:
        raise CtlError(f"unexpected reply from ntpd-py: {exc}", EX_PROTOCOL) from None
    if not reply["ok"]:
        raise CtlError(f"ntpd-py refused the request: {reply['error']}", EX_PROTOCOL)
    return reply
