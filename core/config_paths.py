"""Where ntpd-py's files are by default, and where the control socket ends up.

Kept apart from the pydantic models of :mod:`ntpd_py.core.config` so that
`ntpctl` can find the daemon from two raw TOML values without building those
models (about a quarter of a second); the models use the same function, so the
two cannot disagree.
"""

from __future__ import annotations

import posixpath

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_RUNTIME_DIR", "control_socket_path"]

DEFAULT_CONFIG_PATH = "/etc/ntpd-py/ntp.toml"
DEFAULT_RUNTIME_DIR = "/run/ntpd-py"


def control_socket_path(observation_path: str | None, runtime_dir: str) -> str:
    """`[observability] observation-path`, or `<runtime-dir>/observe` when it is unset."""
    return observation_path or posixpath.join(runtime_dir, "observe")
