"""The package layers hold: who may import whom, and no import cycles.

core/ (pure) <- ipc/ (wire) <- plumbing/ (process mechanics) <- workers/ (roles)
and supervisor/ (process management, ntpctl). supervisor/ reaches the roles only
through `workers.registry`; workers/ never imports supervisor/. Imports inside
functions count as much as top-level ones for the layers; for cycles only
top-level imports matter (they are what runs at import time).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ipc", "plumbing", "workers", "supervisor")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "ipc": {"core", "ipc"},
    "plumbing": {"core", "ipc", "plumbing"},
    "workers": {"core", "ipc", "plumbing", "workers"},
    "supervisor": {"core", "ipc", "plumbing", "supervisor"},
}
# The one door from the supervisor into the roles.
SUPERVISOR_MAY_USE = {"ntpd_py.workers.registry"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["ntpd_py", *parts])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported ntpd_py module, at top level?) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    own = _module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
        for name in names:
            if name.startswith("ntpd_py."):
                found.append((name, id(node) in top_level))
    return found


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _existing(name: str, modules: set[str]) -> str:
    # `from pkg import module` names the module; `from module import thing` the module.
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_respect_the_layers(path: Path) -> None:
    layer = path.relative_to(REPO).parts[0]
    bad = []
    for name, _ in _imports(path):
        target = name.split(".")[1]
        if target not in ALLOWED[layer] and not (
            layer == "supervisor" and any(name.startswith(m) for m in SUPERVISOR_MAY_USE)
        ):
            bad.append(name)
    assert not bad, f"{path.relative_to(REPO)} ({layer}/) imports {bad}"


def test_no_import_cycles_at_import_time() -> None:
    modules = {_module_name(p): p for p in _sources()}
    graph = {
        name: {_existing(t, set(modules)) for t, top in _imports(path) if top} & set(modules)
        for name, path in modules.items()
    }
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node or nxt.endswith("__init__"):
                continue
            if seen.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt])
            elif nxt not in seen:
                visit(nxt, [*trail, nxt])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_rule_is_not_vacuous() -> None:
    # The walker sees function-level imports too: the supervisor's one door is used.
    used = {name for p in (REPO / "supervisor").rglob("*.py") for name, _ in _imports(p)}
    assert used >= SUPERVISOR_MAY_USE
    assert any(name.startswith("ntpd_py.plumbing.") for name in used)
