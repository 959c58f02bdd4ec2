"""How `ntpctl` reaches the daemon: find the control socket, ask, wait at most 2 s.

Every failure is a one-line message with its own exit code (sysexits):
not running 69, permission denied 77, too busy to answer 75, a reply that is
not one 76, bad configuration 78. When the control socket is missing or dead
but the supervisor is alive (`<runtime-dir>/bus/supervisor.pid`, see
supervisor/pidfile.py), clock-control is being restarted: 75, not 69.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from ntpd_py.core.config import DEFAULT_CONFIG_PATH, Config
from ntpd_py.core.errors import ConfigError
from ntpd_py.ipc.framing import MalformedMessage, decode, encode
from ntpd_py.ipc.messages import CtlReply, CtlRequest, MsgType

from .config_file import load_config_file
from .pidfile import supervisor_pid

__all__ = ["CtlError", "control_path", "locate", "request"]

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78
DEFAULT_CONTROL_PATH = "/run/ntpd-py/observe"
DEFAULT_RUNTIME_DIR = "/run/ntpd-py"
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
        config: Config = load_config_file(config_path)
    except ConfigError as exc:
        first = exc.issues[0].render() if exc.issues else "invalid configuration"
        more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        raise CtlError(f"cannot read the configuration: {first}{more}", EX_CONFIG) from None
    return config.control_socket_path(), config.daemon.runtime_dir


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
    try:
        return _request(path, command)
    except CtlError as exc:
        if exc.code != EX_UNAVAILABLE or runtime_dir is None:
            raise
        pid = supervisor_pid(runtime_dir)
        if pid is None:
            raise
        raise CtlError(
            f"ntpd-py is running (supervisor pid {pid}) but clock-control is not answering "
            f"at {path} (restarting?)", EX_TEMPFAIL) from None


def _request(path: str, command: str) -> CtlReply:
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
        sock.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
        sock.connect("ipc://" + path)
        sock.send(encode(CtlRequest(command=command)))  # type: ignore[arg-type]
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
        return seqpacket_request(path, encode(CtlRequest(command=command)),  # type: ignore[arg-type]
                                 TIMEOUT_MS / 1000)
    except TimeoutError:
        raise CtlError(f"ntpd-py did not answer within {TIMEOUT_MS / 1000:g} s (busy or "
                       "hung)", EX_TEMPFAIL) from None
    except OSError as exc:
        raise CtlError(f"cannot reach {path}: {exc.strerror}", EX_UNAVAILABLE) from None


def _decode_reply(frame: bytes) -> CtlReply:
    try:
        reply = decode(frame, {MsgType.CTL_REPLY}, max_size=16 * 1024 * 1024)
    except MalformedMessage as exc:
        raise CtlError(f"unexpected reply from ntpd-py: {exc}", EX_PROTOCOL) from None
    assert isinstance(reply, CtlReply)
    if not reply.ok:
        raise CtlError(f"ntpd-py refused the request: {reply.error}", EX_PROTOCOL)
    return reply
