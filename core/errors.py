"""Exception types raised by the sans-IO core.

Local misuse and bad configuration raise :class:`ConfigError`; bad input from a
peer or a device raises :class:`RemoteSourceError` (or :class:`PacketError` for
NTP packets); a step beyond a configured limit raises
:class:`PanicThresholdExceeded`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "CoreError",
    "PacketError",
    "PanicThresholdExceeded",
    "RemoteSourceError",
]


class CoreError(Exception):
    """Base class of every error the core raises."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a configuration file.

    ``key`` is a dotted path such as ``source[2].precision`` (empty for a
    problem with the file as a whole); ``line`` is 1-based when known.
    """

    file: str
    key: str
    message: str
    line: int | None = None
    value: str | None = None

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if not self.key:
            return f"{where}: {self.message}"
        shown = f" = {self.value}" if self.value is not None else ""
        return f"{where}: {self.key}{shown}: {self.message}"


@dataclass
class ConfigError(CoreError):
    """The configuration cannot be used; ``issues`` lists every problem found."""

    issues: list[ConfigIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(issue.render() for issue in self.issues)


class RemoteSourceError(CoreError):
    """A peer or a device sent something that cannot be a valid measurement."""


class PacketError(RemoteSourceError):
    """An NTP packet is malformed or fails a protocol check."""


class PanicThresholdExceeded(CoreError):
    """A clock step larger than a configured panic threshold was required."""

    def __init__(self, offset_s: float, limit_s: float, which: str) -> None:
        super().__init__(
            f"a clock step of {offset_s:+.6f} s is needed, beyond the {which} of {limit_s:g} s"
        )
        self.offset_s = offset_s
        self.limit_s = limit_s
        self.which = which
