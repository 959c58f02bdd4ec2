"""Turn the text of an `ntp.toml` into a :class:`Config`, or into readable errors.

Every problem is reported at once, each naming the file, the line (where the
TOML text gives it), the key, the value and what was expected. Reading the
file is the caller's job; this module only sees text.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import tomllib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .config import SUPPORTED_MODES, Config
from .errors import ConfigError, ConfigIssue
from .toml_lines import KeyPath, line_of, scan_key_lines

__all__ = ["UNSUPPORTED_TABLES", "load_config_text"]

# ntpd-rs tables that ntpd-py does not implement yet: refused by name, not as typos.
UNSUPPORTED_TABLES = {
    "clock": "steering a clock other than the system clock is not supported yet",
    "csptp": "client-server PTP over the network is not supported yet",
    "csptp-server": "client-server PTP over the network is not supported yet",
}
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_KEYED_MESSAGE = re.compile(r"^(source\[\d+\]\.[a-z-]+): (.*)$", re.S)
_TYPE_NAMES = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "an array",
    "model_type": "a table",
    "dict_type": "a table",
    "model_attributes_type": "a table",
}


# No ntpd-rs configuration nests deeper than a few levels; anything deeper is
# refused before validation, whose error rendering recurses into values.
MAX_NESTING = 32
# Nor holds more than a few thousand keys and values; validating and explaining
# hundreds of thousands of them took 17 s and 480 MB (a 4 MiB file of `kN = N`).
MAX_VALUES = 20_000
# Rendered values are cut so that one absurd value cannot flood a terminal or a log.
MAX_VALUE_CHARS = 120


def load_config_text(text: str, filename: str = "<config>") -> Config:
    """Parse and validate a configuration document; raise ConfigError listing every issue."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.search(str(exc))
        line = int(match.group(1)) if match else None
        message = _TOML_POSITION.sub("", str(exc)).strip()
        raise ConfigError([ConfigIssue(filename, "", f"not valid TOML: {message}", line)]) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively (about 1 000 levels).
        raise ConfigError([_too_deep(filename)]) from None
    depth, count = _shape(document)
    if depth > MAX_NESTING:
        raise ConfigError([_too_deep(filename)])
    if count > MAX_VALUES:
        raise ConfigError([ConfigIssue(
            filename, "", f"more than {MAX_VALUES} keys and values; not a configuration file")])
    try:
        config = _validate(document, text, filename)
    except RecursionError:
        raise ConfigError([_too_deep(filename)]) from None
    return config


def _too_deep(filename: str) -> ConfigIssue:
    return ConfigIssue(
        filename, "", f"arrays or tables nested more than {MAX_NESTING} levels deep; "
        "not a configuration file"
    )


def _shape(document: dict[str, Any]) -> tuple[int, int]:
    """The depth of the deepest array or table and the number of values, without recursion.

    Stops counting once a limit is passed, so that the walk itself stays cheap.
    """
    deepest, count = 0, 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_NESTING or count > MAX_VALUES:
            break
        children = list(node.values() if isinstance(node, dict) else node)
        count += len(children)
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest, count


def _validate(document: dict[str, Any], text: str, filename: str) -> Config:
    lines = _safe_scan(text)
    issues = _unsupported_tables(document, filename, lines)
    for name in UNSUPPORTED_TABLES:
        document.pop(name, None)
    duplicates = _duplicate_phc_paths(document, filename, lines)
    issues.extend(duplicates)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        for err in exc.errors():
            if duplicates and not err["loc"] and "duplicate PHC path" in err["msg"]:
                continue  # already reported above, with its line
            issues.append(_issue(err, filename, lines, document))
        raise ConfigError(issues) from None
    if issues:
        raise ConfigError(issues)
    return config


def _safe_scan(text: str) -> dict[KeyPath, int]:
    # The line map only decorates messages; a scanner bug must never hide the
    # real error behind a traceback.
    try:
        return scan_key_lines(text)
    except Exception:
        return {}


def _unsupported_tables(
    document: dict[str, Any], filename: str, lines: dict[KeyPath, int]
) -> list[ConfigIssue]:
    return [
        ConfigIssue(filename, f"[{name}]", f"{why}; remove this table", line_of(lines, (name,)))
        for name, why in UNSUPPORTED_TABLES.items()
        if name in document
    ]


def _duplicate_phc_paths(
    document: dict[str, Any], filename: str, lines: dict[KeyPath, int]
) -> list[ConfigIssue]:
    # Checked on the raw document as well as in the model, so that a duplicate
    # is reported even when another source has errors of its own.
    entries = document.get("source")
    if not isinstance(entries, list):
        return []
    seen: dict[str, int] = {}
    issues = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("mode") != "ptp":
            continue
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        key = posixpath.normpath(path)
        if key in seen:
            issues.append(
                ConfigIssue(
                    filename,
                    f"source[{index}].path",
                    f"duplicate PHC path (already used by source[{seen[key]}]); "
                    "each PHC may appear once",
                    line_of(lines, ("source", index, "path")),
                    _toml_value(path),
                )
            )
        else:
            seen[key] = index
    return issues


def _clean_loc(loc: tuple[str | int, ...], document: dict[str, Any]) -> KeyPath:
    """Drop the union tag pydantic inserts after `source[i]`."""
    path = list(loc)
    if len(path) >= 3 and path[0] == "source" and isinstance(path[1], int):
        entries = document.get("source")
        if isinstance(entries, list) and path[1] < len(entries):
            entry = entries[path[1]]
            if isinstance(entry, dict) and path[2] == entry.get("mode"):
                del path[2]
    return tuple(path)


def render_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _toml_value(value: Any) -> str | None:
    shown = _toml_value_full(value)
    if shown is not None and len(shown) > MAX_VALUE_CHARS:
        return shown[: MAX_VALUE_CHARS - 1] + "…"
    return shown


def _toml_value_full(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        shown = ", ".join(_toml_value(v) or "…" for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    if isinstance(value, dict):
        return "{ … }"
    return None


def _model_at(path: KeyPath, document: dict[str, Any]) -> type[BaseModel] | None:
    """The model class that describes the table at `path`, if any."""
    from . import config as cfg

    model: type[BaseModel] | None = Config
    for i, part in enumerate(path):
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if model is Config and part == "source":
            mode = _entry(document, path[: i + 2]).get("mode") if len(path) > i + 1 else None
            by_mode: dict[str, type[BaseModel]] = {
                "server": cfg.ServerSourceConfig,
                "pool": cfg.PoolSourceConfig,
                "ptp": cfg.PtpSourceConfig,
            }
            model = by_mode.get(mode if isinstance(mode, str) else "")
            continue
        model = _field_model(model, part)
    return model


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    for name, info in model.model_fields.items():
        if info.alias == key or name == key:
            return _first_model(info.annotation)
    return None


def _first_model(annotation: Any) -> type[BaseModel] | None:
    """The table model inside an annotation such as `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _entry(document: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    node: Any = document
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return node if isinstance(node, dict) else {}


def _expected_keys(path: KeyPath, document: dict[str, Any]) -> str:
    model = _model_at(path[:-1], document)
    if model is None:
        return ""
    keys = sorted((info.alias or name) for name, info in model.model_fields.items())
    close = difflib.get_close_matches(str(path[-1]), keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; expected one of: " + ", ".join(keys)


def _message(err: ErrorDetails, path: KeyPath, document: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "missing mandatory key"
    if kind == "extra_forbidden":
        return "unknown key" + _expected_keys(path, document)
    if kind in _TYPE_NAMES:
        got = type(err["input"]).__name__
        return f"expected {_TYPE_NAMES[kind]}, got {_TOML_TYPE.get(got, got)}"
    bounds = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"expected a value {bounds[kind]} {limit}"
    if kind == "finite_number":
        return "expected a finite number"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'another value')}"
    if kind == "union_tag_invalid":
        return f"unknown mode; expected one of: {', '.join(SUPPORTED_MODES)}"
    if kind == "union_tag_not_found":
        return f"missing key 'mode'; expected one of: {', '.join(SUPPORTED_MODES)}"
    message = err["msg"]
    return message.removeprefix("Value error, ")


_TOML_TYPE = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "list": "an array",
    "dict": "a table",
}


def _issue(
    err: ErrorDetails, filename: str, lines: dict[KeyPath, int], document: dict[str, Any]
) -> ConfigIssue:
    path = _clean_loc(tuple(err["loc"]), document)
    message = _message(err, path, document)
    value = None if err["type"] in ("missing",) else _toml_value(err["input"])
    if err["type"] in ("union_tag_invalid",):
        path = (*path, "mode")
        value = _toml_value(_entry(document, path[:-1]).get("mode"))
    if err["type"] in ("model_type", "dict_type", "union_tag_not_found"):
        value = None if err["type"] == "union_tag_not_found" else value
    if "is not supported yet by ntpd-py (" in message and len(path) == 2:
        path = (*path, "mode")
        value = _toml_value(_entry(document, path[:-1]).get("mode"))
    keyed = _KEYED_MESSAGE.match(message)
    if not path and keyed:
        key_text, message = keyed.groups()
        index = int(key_text.split("[", 1)[1].split("]", 1)[0])
        key = key_text.rsplit(".", 1)[1]
        path = ("source", index, key)
        value = _toml_value(_entry(document, path[:-1]).get(key))
    return ConfigIssue(filename, render_path(path), message, line_of(lines, path), value)
