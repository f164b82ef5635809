"""The package's import graph has no cycles (module-level and function-level imports), so each
module sits below what imports it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

SRC = Path(__file__).resolve().parent.parent / "src"


def modules() -> Dict[str, Path]:
    found = {}
    for path in (SRC / "otel_perfmon").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def test_no_import_cycles():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: List[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_leaves_import_nothing_of_the_package():
    known = modules()
    for leaf in ("otel_perfmon.errors", "otel_perfmon.environment_variables", "otel_perfmon.attributes",
                 "otel_perfmon._fork", "otel_perfmon.redaction", "otel_perfmon._options"):
        assert imports_of(leaf, known[leaf], known) == set(), leaf
