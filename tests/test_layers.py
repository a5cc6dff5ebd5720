"""The layer rule, read from the source: imports point down, and never round in a circle.

Bottom to top::

    shared   todo_server (its __init__), errors, logs, metrics, text_rules
    config   todo_server.config
    storage  todo_server.storage       (never imports Starlette)
    web      todo_server.web
    auth     todo_server.auth
    tasks    todo_server.tasks
    root     app, cli, openapi, docs, purge, doctor, __main__  (imported by nothing below it)

A module may import its own layer and the layers below it, never one above,
not even inside a function. Module-level imports (those under ``if
TYPE_CHECKING:`` too) must form no cycle. Beyond the standard library, each
layer below the root imports only the packages ``THIRD_PARTY`` allows it
(shared: prometheus_client; storage: psycopg and its pool); the root may import anything.

Below the root every import is a statement naming the module it uses: no
``importlib.import_module`` or ``__import__``, and no ``import todo_server``,
whose attributes reach every module already loaded. Nothing in the package
imports ``devtools``, ``tests`` or ``bench``: the wheel does not carry them.
Imports are read with ``ast``; nothing here is imported or run.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
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
        (
            "todo_server",
            "todo_server.errors",
            "todo_server.logs",
            "todo_server.metrics",
            "todo_server.text_rules",
        ),
    ),
    ("config", ("todo_server.config",)),
    ("storage", ("todo_server.storage",)),
    ("web", ("todo_server.web",)),
    ("auth", ("todo_server.auth",)),
    ("tasks", ("todo_server.tasks",)),
    (
        ROOT,
        (
            "todo_server.admin",
            "todo_server.app",
            "todo_server.cli",
            "todo_server.openapi",
            "todo_server.docs",
            "todo_server.purge",
            "todo_server.doctor",
            "todo_server.__main__",
        ),
    ),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}

#: Beyond the standard library, the top-level packages each layer below the root may
#: import (the root may import anything installed). Kept to what the layers use:
#: test_each_allowance_is_used fails when one is no longer needed.
THIRD_PARTY: dict[str, frozenset[str]] = {
    # prometheus_client: the metrics (todo_server/metrics.py), recorded from every layer.
    "shared": frozenset({"prometheus_client"}),
    # psycopg's conninfo parser finds the secrets redaction hides.
    "config": frozenset({"psycopg"}),
    "storage": frozenset({"psycopg", "psycopg_pool"}),
    # uvicorn: the protocol adapter; psycopg and its pool: their errors mapped to responses.
    "web": frozenset({"starlette", "uvicorn", "psycopg", "psycopg_pool"}),
    "auth": frozenset({"jwt", "cryptography", "psycopg", "psycopg_pool", "starlette"}),
    "tasks": frozenset({"starlette", "psycopg"}),
}
STANDARD_LIBRARY = frozenset(sys.stdlib_module_names) | {"__future__"}

#: In the repository but not in the wheel: an import of one works in a checkout only.
NOT_IN_WHEEL = frozenset({"devtools", "tests", "bench"})

#: Functions that import a module named by a string, out of sight of the rules here.
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


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
    """Every import in ``sources``, resolved to a module where it names one of ours.

    Statements, and calls of ``importlib.import_module`` or ``__import__`` whose
    module is written out as a string (dynamic_imports forbids the calls below the
    root; here they count as imports, so the root's are checked too).
    """
    found: list[Import] = []
    for importer, (path, source) in sources.items():
        is_package = path.endswith("__init__.py")
        for node, module_level in _walk(ast.parse(source, path)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _targets(node, importer, is_package, sources)
            elif isinstance(node, ast.Call) and (name := _imported_by_call(node)):
                targets = [_ours_or_top(name, sources)]
            else:
                continue
            for target in targets:
                found.append(Import(importer, target, path, node.lineno, module_level))
    return found


def _walk(tree: ast.Module) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it runs when the module loads (not in a function body)."""

    def visit(node: ast.AST, module_level: bool) -> Iterator[tuple[ast.AST, bool]]:
        body_is_deferred = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for field, value in ast.iter_fields(node):
            runs_now = module_level and not (body_is_deferred and field == "body")
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    yield child, runs_now
                    yield from visit(child, runs_now)

    return visit(tree, True)


def _imported_by_call(call: ast.Call) -> str | None:
    """The module ``importlib.import_module("x")`` or ``__import__("x")`` loads, if written."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name not in DYNAMIC_IMPORTERS or not call.args:
        return None
    first = call.args[0]
    written = first.value if isinstance(first, ast.Constant) else None
    # A relative name needs its package argument; the call itself is flagged anyway.
    return written if isinstance(written, str) and written[:1] not in ("", ".") else None


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
        submodule = f"{base}.{alias.name}" if base else alias.name
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


def below_the_root(module: str) -> bool:
    return layer_of(module) not in (ROOT, None)


def third_party_imports(
    sources: dict[str, tuple[str, str]], allowed: dict[str, frozenset[str]] = THIRD_PARTY
) -> list[str]:
    """Imports of packages outside the standard library that the layer's allowance lacks."""
    problems = []
    for imp in imports_of(sources):
        layer = layer_of(imp.importer)
        if layer in (ROOT, None) or imp.target in sources or imp.target == "todo_server":
            continue
        if imp.target in STANDARD_LIBRARY or imp.target in NOT_IN_WHEEL:  # NOT_IN_WHEEL: below
            continue
        if imp.target not in allowed[layer]:
            allowance = ", ".join(sorted(allowed[layer])) or "nothing"
            problems.append(
                f"{imp.where()}: layer {layer} may import, beyond the standard library,"
                f" {allowance} (THIRD_PARTY in tests/test_layers.py)"
            )
    return problems


def unused_allowances(
    sources: dict[str, tuple[str, str]], allowed: dict[str, frozenset[str]] = THIRD_PARTY
) -> list[str]:
    """Packages a layer may import but none of its modules does: the allowance is stale."""
    used = {(layer_of(imp.importer), imp.target) for imp in imports_of(sources)}
    return [
        f"layer {layer} imports no {package}: take it out of THIRD_PARTY in tests/test_layers.py"
        for layer, packages in allowed.items()
        for package in sorted(packages)
        if (layer, package) not in used
    ]


def not_in_wheel_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    return [
        f"{imp.where()}: devtools, tests and bench are not in the wheel;"
        " the package must not import them"
        for imp in imports_of(sources)
        if imp.target in NOT_IN_WHEEL and imp.target not in sources
    ]


def dynamic_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    """Each use of ``import_module`` or ``__import__`` below the root, called or not."""
    problems = []
    for module, (path, source) in sources.items():
        if not below_the_root(module):
            continue
        for node, module_level in _walk(ast.parse(source, path)):
            for written in _dynamic_importers_named(node):
                scope = "" if module_level else ", inside a function"
                problems.append(
                    f"{module} uses {written} ({path}:{node.lineno}{scope}): below the"
                    " composition root imports are statements, which the layer rules can read"
                )
    return problems


def _dynamic_importers_named(node: ast.AST) -> list[str]:
    """``import_module`` or ``__import__`` as ``node`` names it, if it does."""
    if isinstance(node, ast.Name) and node.id in DYNAMIC_IMPORTERS:
        return [node.id]
    if isinstance(node, ast.Attribute) and node.attr in DYNAMIC_IMPORTERS:
        return [ast.unparse(node)]
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module}.{a.name}" for a in node.names if a.name in DYNAMIC_IMPORTERS]
    if isinstance(node, ast.Constant) and node.value in DYNAMIC_IMPORTERS:  # getattr(m, "...")
        return [repr(node.value)]
    return []


def whole_package_imports(sources: dict[str, tuple[str, str]]) -> list[str]:
    """``import todo_server`` (or ``import todo_server.x`` unaliased) below the root.

    Either binds the name ``todo_server``, through which attribute access reaches
    every module loaded so far, whatever its layer.
    """
    problems = []
    for module, (path, source) in sources.items():
        if not below_the_root(module):
            continue
        for node, module_level in _walk(ast.parse(source, path)):
            if not isinstance(node, ast.Import):
                continue
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == "todo_server" and (not rest or alias.asname is None):
                    written = ast.unparse(ast.Import(names=[alias]))
                    scope = "" if module_level else ", inside a function"
                    problems.append(
                        f"{module} has `{written}` ({path}:{node.lineno}{scope}): below the"
                        " composition root, import the module you use (from todo_server.x"
                        " import y), not the package whose attributes reach every loaded module"
                    )
    return problems


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


def test_each_layer_imports_only_its_allowed_third_party_packages(sources):
    no_problems(third_party_imports(sources))


def test_each_allowance_is_used(sources):
    no_problems(unused_allowances(sources))


def test_nothing_imports_what_the_wheel_does_not_carry(sources):
    no_problems(not_in_wheel_imports(sources))


def test_below_the_root_nothing_imports_dynamically(sources):
    no_problems(dynamic_imports(sources))


def test_below_the_root_nothing_imports_the_whole_package(sources):
    no_problems(whole_package_imports(sources))


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
    assert third_party_imports(sources) == [
        "todo_server.storage.db imports starlette"
        " (todo_server/storage/db.py:3, inside a function): layer storage may import,"
        " beyond the standard library, psycopg, psycopg_pool (THIRD_PARTY in tests/test_layers.py)"
    ]
    # The function-level import makes no cycle; the relative and TYPE_CHECKING ones do.
    assert import_cycles(sources) == [
        "import cycle: todo_server.web.bodies -> todo_server.web.cors -> todo_server.web.bodies"
        " (todo_server/web/bodies.py:1; todo_server/web/cors.py:3)"
    ]


def test_third_party_packages_are_held_to_each_layers_allowance():
    allowed = {
        "shared": frozenset(),
        "config": frozenset({"psycopg"}),
        "tasks": frozenset({"starlette", "psycopg"}),
    }
    sources = made_up(
        **{
            "todo_server": "",
            "todo_server.errors": "import json\nimport starlette.responses\n",
            "todo_server.config": (
                "from __future__ import annotations\n"
                "from psycopg.conninfo import conninfo_to_dict\n"
                "def parse():\n"
                "    import jwt\n"
            ),
            "todo_server.tasks": "import importlib\nimportlib.import_module('psycopg_pool')\n",
            "todo_server.app": "import whatever_is_installed\n",
        }
    )
    assert third_party_imports(sources, allowed) == [
        "todo_server.errors imports starlette (todo_server/errors.py:2): layer shared may"
        " import, beyond the standard library, nothing (THIRD_PARTY in tests/test_layers.py)",
        "todo_server.config imports jwt (todo_server/config.py:4, inside a function): layer"
        " config may import, beyond the standard library, psycopg"
        " (THIRD_PARTY in tests/test_layers.py)",
        "todo_server.tasks imports psycopg_pool (todo_server/tasks.py:2): layer tasks may"
        " import, beyond the standard library, psycopg, starlette"
        " (THIRD_PARTY in tests/test_layers.py)",
    ]
    # tasks is allowed starlette and psycopg but imports neither by name.
    assert unused_allowances(sources, allowed) == [
        "layer tasks imports no psycopg: take it out of THIRD_PARTY in tests/test_layers.py",
        "layer tasks imports no starlette: take it out of THIRD_PARTY in tests/test_layers.py",
    ]


def test_imports_of_what_the_wheel_lacks_are_caught_in_every_layer():
    sources = made_up(
        **{
            "todo_server": "",
            "todo_server.storage": "from tests.support.database import MIGRATION_DEFAULTS\n",
            "todo_server.web": "def serve():\n    import devtools.liveserver\n",
            "todo_server.cli": (
                "import importlib\n"
                "import benchmark_tools\n"
                "from bench import load\n"
                "importlib.import_module('devtools.postgres')\n"
            ),
        }
    )
    assert not_in_wheel_imports(sources) == [
        "todo_server.storage imports tests (todo_server/storage.py:1): devtools, tests and"
        " bench are not in the wheel; the package must not import them",
        "todo_server.web imports devtools (todo_server/web.py:2, inside a function): devtools,"
        " tests and bench are not in the wheel; the package must not import them",
        "todo_server.cli imports bench (todo_server/cli.py:3): devtools, tests and"
        " bench are not in the wheel; the package must not import them",
        "todo_server.cli imports devtools (todo_server/cli.py:4): devtools, tests and"
        " bench are not in the wheel; the package must not import them",
    ]
    # Said once, by this rule, not again as a package outside the allowance.
    assert third_party_imports(sources) == []


def test_dynamic_imports_below_the_root_are_caught():
    sources = made_up(
        **{
            "todo_server": "",
            "todo_server.storage": "",
            "todo_server.storage.db": (
                "import importlib.resources\n"
                "bodies = importlib.import_module('todo_server.web.bodies')\n"
            ),
            "todo_server.web": "",
            "todo_server.web.bodies": "def load(name):\n    return __import__(name)\n",
            "todo_server.web.cors": "from importlib import import_module as load\n",
            "todo_server.auth": "import importlib\nload = getattr(importlib, 'import_module')\n",
            "todo_server.app": "import importlib\nimportlib.import_module('todo_server.web')\n",
        }
    )
    assert dynamic_imports(sources) == [
        "todo_server.storage.db uses importlib.import_module (todo_server/storage/db.py:2):"
        " below the composition root imports are statements, which the layer rules can read",
        "todo_server.web.bodies uses __import__ (todo_server/web/bodies.py:2, inside a"
        " function): below the composition root imports are statements, which the layer"
        " rules can read",
        "todo_server.web.cors uses importlib.import_module (todo_server/web/cors.py:1):"
        " below the composition root imports are statements, which the layer rules can read",
        "todo_server.auth uses 'import_module' (todo_server/auth.py:2):"
        " below the composition root imports are statements, which the layer rules can read",
    ]
    # A module written out is read as an import too, so the layer rules see it.
    assert upward_imports(sources) == [
        "todo_server.storage.db imports todo_server.web.bodies (todo_server/storage/db.py:2):"
        " layer storage imports layer web, which is above it"
    ]


def test_importing_the_whole_package_below_the_root_is_caught():
    sources = made_up(
        **{
            "todo_server": "",
            "todo_server.storage": "",
            "todo_server.storage.db": "",
            "todo_server.web": (
                "import todo_server\n"
                "import todo_server.storage.db\n"
                "import todo_server as package\n"
                "import todo_server.storage.db as db\n"  # binds the module only: fine
            ),
            "todo_server.app": "import todo_server\n",  # the root may
        }
    )
    rule = (
        ": below the composition root, import the module you use"
        " (from todo_server.x import y), not the package whose attributes reach every"
        " loaded module"
    )
    assert whole_package_imports(sources) == [
        f"todo_server.web has `import todo_server` (todo_server/web.py:1){rule}",
        f"todo_server.web has `import todo_server.storage.db` (todo_server/web.py:2){rule}",
        f"todo_server.web has `import todo_server as package` (todo_server/web.py:3){rule}",
    ]
