"""The ntp.toml(5) man page, generated from the configuration model.

Every table and key comes from `core/config.py` (its pydantic models, their
field types, constraints, defaults and descriptions), so the page cannot drift
from what `ntpd-py validate` accepts: a new key without a description fails
tests/supervisor/test_manpages.py rather than going undocumented. The roff is
plain man(7) macros, rendered without warnings by `groff -man` and `man -l`.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, Union

import annotated_types
from ntpd_py.core import config as model
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["Key", "Section", "render", "sections"]

# Tables written inline in the file ({ min = 4, max = 10 }) rather than as [sections].
_INLINE: dict[type[BaseModel], str] = {
    model.PollIntervalLimits: "{ min = INTEGER, max = INTEGER } (log2 seconds)",
    model.PartialPollIntervalLimits: ("{ min = INTEGER, max = INTEGER } (log2 seconds; "
                                      "either side may be left out)"),
    model.StepThreshold: 'seconds, "inf", or { forward = ..., backward = ... }',
}


@dataclass(frozen=True)
class Key:
    """One key of one table, as the page shows it."""

    name: str
    type: str
    default: str  # TOML text, "required" or "unset"
    description: str


@dataclass(frozen=True)
class Section:
    """One table of the file: its header as written in TOML, what it is, its keys."""

    header: str
    about: str
    keys: tuple[Key, ...]


def _version() -> str:
    try:
        return metadata.version("ntpd-py")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            rest = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return rest, True
    return annotation, False


def _constraints(metadata_items: list[Any]) -> str:
    bounds = []
    for item in metadata_items:
        for cls, attr, sign in ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
                                (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<")):
            if isinstance(item, cls):
                bounds.append(f"{sign} {_toml(getattr(item, attr))}")
        if isinstance(item, FieldInfo):
            bounds.append(_constraints(item.metadata))
    return ", ".join(b for b in bounds if b)


def _type_text(annotation: Any) -> str:
    """A reader's name for a field's type: integer, one of "a", "b", array of string ..."""
    annotation, _ = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        text = _type_text(base)
        bounds = _constraints(extra)
        return f"{text} ({bounds})" if bounds else text
    if origin is Literal:
        return "one of " + ", ".join(_toml(v) for v in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"array of {_type_text(typing.get_args(annotation)[0])}"
    if origin is tuple:
        items = typing.get_args(annotation)
        return f"array of {len(items)} {_type_text(items[0])}s"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"table of {_type_text(key)} = {_type_text(value)}"
    if isinstance(annotation, type) and annotation in _INLINE:
        return _INLINE[annotation]
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in names:
        return names[annotation]
    raise TypeError(f"ntp.toml(5): no type name for {annotation!r}")


def _toml(value: Any) -> str:
    """A default value as it would be written in the file."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        if math.isinf(value):
            return '"inf"'
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, model.StepThreshold):
        forward = '"inf"' if value.forward is None else _toml(value.forward)
        backward = '"inf"' if value.backward is None else _toml(value.backward)
        if forward == backward:
            return forward
        return f"{{ forward = {forward}, backward = {backward} }}"
    if isinstance(value, BaseModel):
        parts = [f"{f.alias or n} = {_toml(getattr(value, n))}"
                 for n, f in type(value).model_fields.items()]
        return "{ " + ", ".join(parts) + " }"
    raise TypeError(f"ntp.toml(5): no TOML form for {value!r}")


def _default_text(name: str, info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if name.endswith("permissions") and isinstance(value, int):
        return f"0o{value:o}"  # a file mode reads as octal, as in ntpd-rs's docs
    return _toml(value)


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested [table], or None for a plain or inline value."""
    annotation, _ = _strip_optional(annotation)
    if (isinstance(annotation, type) and issubclass(annotation, BaseModel)
            and annotation not in _INLINE):
        return annotation
    return None


def _source_models() -> tuple[list[type[BaseModel]], list[str]]:
    """The supported [[source]] kinds, and the modes only known to be unsupported."""
    (item,) = typing.get_args(model.Config.model_fields["source"].annotation)
    union = typing.get_args(item)[0]
    supported, unsupported = [], []
    for kind in typing.get_args(union):
        mode = typing.get_args(kind.model_fields["mode"].annotation)[0]
        if mode in model.SUPPORTED_MODES:
            supported.append(kind)
        else:
            unsupported.append(mode)
    return supported, unsupported


def _walk(cls: type[BaseModel], header: str, about: str) -> Iterator[Section]:
    keys, nested = [], []
    # mode first: it says which kind of [[source]] the other keys belong to
    fields = sorted(cls.model_fields.items(), key=lambda item: item[0] != "mode")
    for name, info in fields:
        key = info.alias or name
        sub = _sub_model(info.annotation)
        if sub is not None:
            # [synchronization] -> [synchronization.algorithm]; [[server]] -> [server.allowlist]
            nested.append((sub, f"[{header.strip('[]')}.{key}]", info.description or ""))
            continue
        full: Any = info.annotation
        if info.metadata:
            full = typing.Annotated[(info.annotation, *info.metadata)]
        keys.append(Key(key, _type_text(full), _default_text(name, info), info.description or ""))
    yield Section(header, about, tuple(keys))
    for sub, sub_header, sub_about in nested:
        yield from _walk(sub, sub_header, sub_about)


def sections() -> list[Section]:
    """Every table of ntp.toml, in the order the page shows them."""
    fields = model.Config.model_fields
    result: list[Section] = []
    supported, _ = _source_models()
    for kind in supported:
        mode = typing.get_args(kind.model_fields["mode"].annotation)[0]
        result.extend(_walk(kind, f'[[source]] mode = "{mode}"', kind.__doc__ or ""))
    for name in ("source_defaults", "synchronization", "server", "nts_ke_server", "keyset",
                 "observability", "daemon"):
        info = fields[name]
        key = info.alias or name
        annotation, _ = _strip_optional(info.annotation)
        if typing.get_origin(annotation) is list:
            (cls,) = typing.get_args(annotation)
            header = f"[[{key}]]"
        else:
            cls, header = annotation, f"[{key}]"
        assert isinstance(cls, type) and issubclass(cls, BaseModel)
        result.extend(_walk(cls, header, (cls.__doc__ or info.description or "")))
    return result


# -- roff -------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text for a roff line: backslashes, hyphens (as typed), non-ASCII as \\[uXXXX]."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\e")
        elif char == "-":
            out.append("\\-")
        elif ord(char) > 126:
            out.append(f"\\[u{ord(char):04X}]")
        else:
            out.append(char)
    line = "".join(out)
    return "\\&" + line if line[:1] in (".", "'") else line


def _arg(text: str) -> str:
    """Text for a quoted macro argument: as _esc, and its double quotes as \\(dq."""
    return _esc(text).replace('"', "\\(dq")


def _para(text: str) -> str:
    """A docstring as one roff paragraph: lines joined, backquotes dropped."""
    return _esc(" ".join(text.replace("`", "").split()))


_HEAD = """\
.TH NTP.TOML 5 "" "ntpd\\-py {version}" "File Formats"
.SH NAME
ntp.toml \\- configuration file of the ntpd\\-py time synchronization daemon
.SH SYNOPSIS
.I /etc/ntpd\\-py/ntp.toml
.SH DESCRIPTION
.B ntpd\\-py
reads a TOML file with the tables and keys of ntpd\\-rs (kebab\\-case names),
plus a
.B [daemon]
table of its own.
Unknown keys, wrong types, out\\-of\\-range values and missing required keys are
errors naming the file, line, key and value;
.B ntpd\\-py validate
(or
.BR "ntpctl validate" )
checks a file and exits 78 if it is invalid.
.B ntpd\\-py run
reads the file at start and again on SIGHUP; a file with errors is rejected and
the running configuration kept.
.PP
Each key below is shown with its type, its default (\\fBrequired\\fR: it has
none) and what it does.
Poll intervals are log2 seconds (4 means 16 s).
This page is generated from the configuration model of ntpd\\-py {version}.
"""

_TAIL = """\
.SH EXAMPLE
A KVM guest disciplined by its host's clock through ptp_kvm, with NTP servers
as a cross\\-check:
.PP
.nf
.RS
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 1e\\-7
stratum = 1

[[source]]
mode = "pool"
address = "pool.ntp.org"
count = 4

[synchronization]
minimum\\-agreeing\\-sources = 1
.RE
.fi
.SH FILES
.TP
.I /etc/ntpd\\-py/ntp.toml
the configuration
.TP
.I /run/ntpd\\-py/observe
the control socket ntpctl uses ([observability] observation\\-path)
.TP
.I /var/lib/ntpd\\-py/drift
the frequency saved hourly ([daemon] state\\-dir)
.SH SEE ALSO
.BR ntpd\\-py (8),
.BR ntpctl (8)
"""


def render() -> str:
    """The whole ntp.toml(5) page as roff."""
    version = _version()
    lines = [_HEAD.format(version=_esc(version)).rstrip("\n")]
    lines.append(".SH TABLES")
    for section in sections():
        lines.append(f'.SS "{_arg(section.header)}"')
        if section.about:
            lines.append(_para(section.about))
        for key in section.keys:
            lines.append(".TP")
            lines.append(f"\\fB{_esc(key.name)}\\fR \\(em {_esc(key.type)}; "
                         f"default: {_esc(key.default)}")
            lines.append(_para(key.description) if key.description else "(undocumented)")
    _, unsupported = _source_models()
    lines.append(".SS Not supported yet")
    lines.append(_esc("[[source]] mode = " + ", ".join(f'"{m}"' for m in unsupported) +
                      " are ntpd-rs source kinds that ntpd-py does not implement yet; "
                      "validate reports them as such."))
    lines.append(_TAIL.rstrip("\n"))
    return "\n".join(lines) + "\n"
