"""Best-effort map from TOML key paths to the line that defines them.

`tomllib` returns plain dicts with no positions, so error messages would lose
the line number. This scanner reads the document text once and records, for
every table header and every `key = value` line, the path it defines, with
array-of-tables indices as integers: `("source", 2, "precision") -> 14`.

It only decorates error messages: on anything it does not understand it
records less, never raises.
"""

from __future__ import annotations

import re

__all__ = ["KeyPath", "line_of", "scan_key_lines"]

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INLINE_KEY = re.compile(r"([A-Za-z0-9_-]+)\s*=")


def _split_key(text: str) -> list[str]:
    """Split a dotted TOML key (bare or quoted parts) into its parts."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t.":
            i += 1
        elif ch in "\"'":
            end = text.find(ch, i + 1)
            end = n if end < 0 else end
            parts.append(text[i + 1 : end])
            i = end + 1
        else:
            match = _BARE_KEY.match(text, i)
            if not match:
                return parts
            parts.append(match.group(0))
            i = match.end()
    return parts


def _strip_comment(line: str) -> str:
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _depth_change(text: str) -> int:
    depth, quote = 0, None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


class _Scanner:
    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.array_index: dict[tuple[str, ...], int] = {}
        self.current: KeyPath = ()

    def _resolve(self, parts: list[str]) -> KeyPath:
        path: list[str | int] = []
        names: list[str] = []
        for part in parts:
            names.append(part)
            path.append(part)
            index = self.array_index.get(tuple(names))
            if index is not None:
                path.append(index)
        return tuple(path)

    def header(self, inner: str, array: bool, lineno: int) -> None:
        parts = _split_key(inner)
        if not parts:
            return
        if array:
            key = tuple(parts)
            self.array_index[key] = self.array_index.get(key, -1) + 1
        self.current = self._resolve(parts)
        self.lines.setdefault(self.current, lineno)

    def assignment(self, key_text: str, value_text: str, lineno: int) -> None:
        path = self.current + tuple(_split_key(key_text))
        self.lines.setdefault(path, lineno)
        if value_text.lstrip().startswith("{"):
            for match in _INLINE_KEY.finditer(value_text):
                self.lines.setdefault((*path, match.group(1)), lineno)


def scan_key_lines(text: str) -> dict[KeyPath, int]:
    """Return the 1-based line of each table and key the document defines."""
    scanner = _Scanner()
    depth = 0
    in_multiline: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if raw.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        line = _strip_comment(raw).strip()
        if depth > 0:
            depth = max(0, depth + _depth_change(line))
            continue
        if not line:
            continue
        if line.startswith("[["):
            scanner.header(line[2:].split("]]", 1)[0], True, lineno)
        elif line.startswith("["):
            scanner.header(line[1:].split("]", 1)[0], False, lineno)
        elif "=" in line:
            key_text, _, value_text = line.partition("=")
            scanner.assignment(key_text, value_text, lineno)
            for marker in ('"""', "'''"):
                if value_text.count(marker) % 2 == 1:
                    in_multiline = marker
            depth = max(0, _depth_change(value_text))
    return scanner.lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its nearest enclosing table that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
