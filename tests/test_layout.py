"""The package's architecture, kept: each folder imports only from its own
and from folders below it, and no module import makes a cycle (docs/design.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import ROOT

SRC = ROOT / "src" / "mcp_sidecar"
#: Lowest first: a module may import from its own layer and the ones before it.
LAYERS = [
    ("", "errors", "logs", "redact"),
    ("config",),
    ("observe",),
    ("faults",),
    ("net",),
    ("health",),
    ("forward",),
    ("admin",),
    ("supervise",),
    ("demo",),
    ("replay",),
    ("cli",),
    ("__main__",),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (every import, at any depth)."""
    graph: dict[str, set[str]] = {}
    modules = {_module(p) for p in SRC.rglob("*.py")}
    for path in SRC.rglob("*.py"):
        module = _module(path)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # "from . import sockopts" imports a module
                    sub = f"{target}.{alias.name}" if target else alias.name
                    targets.add(sub if sub in modules else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mcp_sidecar"):
                targets.add(node.module.removeprefix("mcp_sidecar").lstrip("."))
            elif isinstance(node, ast.Import):
                targets |= {
                    a.name.removeprefix("mcp_sidecar").lstrip(".")
                    for a in node.names
                    if a.name.startswith("mcp_sidecar")
                }
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def test_imports_point_down_the_layers() -> None:
    upward = [f"{m} -> {t}" for m, targets in _imports().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, upward


def test_no_import_cycle_and_no_type_checking_imports() -> None:
    graph = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target] if target in path else [node, target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
    assert not [p for p in SRC.rglob("*.py") if "TYPE_CHECKING" in p.read_text()]


#: No module longer than this: a file a reader can hold in mind.
MAX_MODULE_LINES = 500


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def _design_map() -> dict[str, set[str]]:
    """docs/design.md's layout block: folder ('' for the top) -> the modules it names."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        if re.match(r"^\w+/\s", line + " "):
            folder = line.split("/", 1)[0]
        named.setdefault(folder, set()).update(re.findall(r"(?:^|\s)(\w+\.py)\b", line))
    return named


def test_the_design_map_names_every_module_in_its_folder() -> None:
    named = _design_map()
    actual: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        if path.name != "__init__.py":
            folder = "" if path.parent == SRC else path.parent.name
            actual.setdefault(folder, set()).add(path.name)
    assert named == actual
