"""The layer rule, read from the source: imports point down, and never round in a circle.

Bottom to top::

    shared   todo_server (its __init__), errors, logs, text_rules
    config   todo_server.config
    storage  todo_server.storage       (never imports Starlette)
    web      todo_server.web
    auth     todo_server.auth
    tasks    todo_server.tasks
    root     app, cli, openapi, docs, purge, __main__   (imported by nothing below it)

A module may import its own layer and the layers below it, never one above,
not even inside a function. Module-level imports (those under ``if
TYPE_CHECKING:`` too) must form no cycle. Imports are read with ``ast``;
nothing here is imported or run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import todo_server

PACKAGE = Path(todo_server.__file__).parent
ROOT = "root"

#: Bottom to top: each layer's modules, by name or by package prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "shared",
        ("todo_server", "todo_server.errors", "todo_server.logs", "todo_server.text_rules"),
    ),
    ("config", ("todo_server.config",)),
    ("storage", ("todo_server.storage",)),
    ("web", ("todo_server.web",)),
    ("auth", ("todo_server.auth",)),
    ("tasks", ("todo_server.tasks",)),
    (
        ROOT,
        (
            "todo_server.app",
            "todo_server.cli",
            "todo_server.openapi",
            "todo_server.docs",
            "todo_server.purge",
            "todo_server.__main__",
        ),
    ),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it was written."""

    importer: str
    target: str  # a todo_server module, or the top-level name of anything else
    path: str
    line: int
    module_level: bool

    def where(self) -> str:
        scope = "" if self.module_level else ", inside a function"
        return f"{self.importer} imports {self.target} ({self.path}:{self.line}{scope})"


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    for name, members in LAYERS:
        for member in members:
            if module == member or (member != "todo_server" and module.startswith(member + ".")):
                return name
    return None


def read_sources(package: Path = PACKAGE) -> dict[str, tuple[str, str]]:
    """Every module of the package: name -> (path for messages, source)."""
    return {
        module_name(path, package): (str(path.relative_to(package.parent)), path.read_text())
        for path in sorted(package.rglob("*.py"))
    }


def imports_of(sources: dict[str, tuple[str, str]]) -> list[Import]:
    """Every import in ``sources``, resolved to a module where it names one of ours."""
    found: list[Import] = []
    for importer, (path, source) in sources.items():
        is_package = path.endswith("__init__.py")
        for node, module_level in _import_nodes(ast.parse(source, path)):
            for target in _targets(node, importer, is_package, sources):
                found.append(Import(importer, target, path, node.lineno, module_level))
    return found


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Import statements with whether each runs when the module loads (not in a def)."""
    nodes: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                nodes.append((child, module_level))
            inside_def = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, module_level and not inside_def)

    visit(tree, True)
    return nodes


def _targets(
    node: ast.Import | ast.ImportFrom,
    importer: str,
    is_package: bool,
    sources: dict[str, tuple[str, str]],
) -> list[str]:
    if isinstance(node, ast.Import):
        return [_ours_or_top(alias.name, sources) for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        if not is_package:
            anchor.pop()
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in sources else _ours_or_top(base, sources))
    return list(dict.fromkeys(targets))


def _ours_or_top(name: str, sources: dict[str, tuple[str, str]]) -> str:
    """``name`` itself when it is one of ours (or its nearest known package); else its top."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in sources:
            return candidate
        parts.pop()
    return name.split(".")[0]


# --- the rules, as functions of the sources (so the tests below can try them) ----------


def modules_in_no_layer(sources: dict[str, tuple[str, str]]) -> list[str]:
    return [
        f"{module} ({path}) is in no layer: add it to LAYERS in tests/test_layers.py"
        for module, (path, _) in sources.items()
        if layer_of(module) is None
    ]


def upward_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    problems = []
    for imp in imports_of(sources):
        if imp.target not in sources:
            continue
        low, high = layer_of(imp.importer), layer_of(imp.target)
        if low is None or high is None or high == ROOT:  # ROOT: root_imports says it
            continue
        if RANK[high] > RANK[low]:
            problems.append(f"{imp.where()}: layer {low} imports layer {high}, which is above it")
    return problems


def root_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    return [
        f"{imp.where()}: only the composition root may import the composition root"
        for imp in imports_of(sources)
        if layer_of(imp.target) == ROOT
        and imp.target in sources
        and layer_of(imp.importer) not in (ROOT, None)
    ]


def storage_starlette_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    return [
        f"{imp.where()}: storage never imports Starlette"
        for imp in imports_of(sources)
        if layer_of(imp.importer) == "storage" and imp.target == "starlette"
    ]


def import_cycles(sources: dict[str, tuple[str, str]]) -> list[str]:
    """Each cycle of module-level imports among our modules, with the lines that make it."""
    edges: dict[str, dict[str, Import]] = {module: {} for module in sources}
    for imp in imports_of(sources):
        if imp.module_level and imp.target in sources:
            edges[imp.importer].setdefault(imp.target, imp)
    problems = []
    for component in _strongly_connected(edges):
        inside = sorted(component)
        if len(inside) == 1 and inside[0] not in edges[inside[0]]:
            continue
        cycle = _a_cycle_through(inside[0], set(inside), edges)
        steps = [edges[a][b] for a, b in zip(cycle, cycle[1:], strict=False)]
        lines = "; ".join(f"{step.path}:{step.line}" for step in steps)
        problems.append(f"import cycle: {' -> '.join(cycle)} ({lines})")
    return problems


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _a_cycle_through(
    start: str, within: set[str], edges: dict[str, dict[str, Import]]
) -> list[str]:
    """The shortest path from ``start`` back to itself inside one component."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(edges[node]):
            if succ == start:
                return [*paths[node], start]
            if succ in within and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")


# --- the package ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[str, str]]:
    return read_sources()


def no_problems(problems: list[str]) -> None:
    """Fail with one line per offending import, naming the module, the target and the line."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_every_module_is_in_a_layer(sources):
    no_problems(modules_in_no_layer(sources))


def test_no_module_imports_a_layer_above_its_own(sources):
    no_problems(upward_imports(sources))


def test_nothing_below_the_root_imports_the_root(sources):
    no_problems(root_imports(sources))


def test_storage_never_imports_starlette(sources):
    no_problems(storage_starlette_imports(sources))


def test_no_import_cycles(sources):
    no_problems(import_cycles(sources))


# --- the rules themselves, on made-up modules ------------------------------------------


def made_up(**modules: str) -> dict[str, tuple[str, str]]:
    """Sources keyed by dotted name, e.g. ``made_up(**{"todo_server.web.x": "import os"})``."""
    return {name: (name.replace(".", "/") + ".py", source) for name, source in modules.items()}


def test_the_rules_catch_what_they_forbid():
    sources = made_up(
        **{
            "todo_server": "",
            "todo_server.errors": "",
            "todo_server.app": "",
            "todo_server.storage": "",
            "todo_server.storage.db": (
                "from todo_server.errors import ApiError\n"
                "def pool():\n"
                "    from starlette.requests import Request\n"
                "    from todo_server.web import bodies\n"
            ),
            "todo_server.web": "",
            "todo_server.web.bodies": "from . import cors\n",
            "todo_server.web.cors": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from todo_server.web.bodies import parse\n"
                "from todo_server import app\n"
            ),
            "todo_server.stray": "",
        }
    )
    assert modules_in_no_layer(sources) == [
        "todo_server.stray (todo_server/stray.py) is in no layer:"
        " add it to LAYERS in tests/test_layers.py"
    ]
    assert upward_imports(sources) == [
        "todo_server.storage.db imports todo_server.web.bodies"
        " (todo_server/storage/db.py:4, inside a function): layer storage imports layer web,"
        " which is above it"
    ]
    assert root_imports(sources) == [
        "todo_server.web.cors imports todo_server.app (todo_server/web/cors.py:4):"
        " only the composition root may import the composition root"
    ]
    assert storage_starlette_imports(sources) == [
        "todo_server.storage.db imports starlette"
        " (todo_server/storage/db.py:3, inside a function): storage never imports Starlette"
    ]
    # The function-level import makes no cycle; the relative and TYPE_CHECKING ones do.
    assert import_cycles(sources) == [
        "import cycle: todo_server.web.bodies -> todo_server.web.cors -> todo_server.web.bodies"
        " (todo_server/web/bodies.py:1; todo_server/web/cors.py:3)"
    ]
