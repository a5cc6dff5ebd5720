"""The lifespan's state names every key a handler reads from ``request.state``."""

from __future__ import annotations

import ast
from pathlib import Path

import todo_server
from todo_server.admin import AdminState
from todo_server.app import ServiceState

PACKAGE = Path(todo_server.__file__).parent

#: Written per request, not by the lifespan: by ``web.middleware`` and ``auth.guard``.
PER_REQUEST = {"request_id", "user"}


def state_keys_read(tree: ast.AST) -> set[str]:
    """``request.state.<key>`` and ``state["<key>"]`` / ``state.get("<key>")`` in one module.

    Only ``request.state``: other objects have a ``state`` of their own (a listing
    page's ETag state), which is not the lifespan's.
    """
    keys: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "state"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "request"
        ):
            keys.add(node.attr)
        elif isinstance(node, ast.Subscript) and _is_state(node.value):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                keys.add(node.slice.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_state(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    return keys


def _is_state(node: ast.expr) -> bool:
    """``state`` or ``scope["state"]``."""
    if isinstance(node, ast.Name):
        return node.id == "state"
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and node.slice.value == "state"
    )


def test_every_state_key_a_module_reads_is_in_the_lifespan_state():
    declared = set(ServiceState.__annotations__)
    unknown = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        keys = state_keys_read(ast.parse(path.read_text(), str(path)))
        if path == PACKAGE / "admin.py":  # the admin server's app, with a lifespan of its own
            missing = keys - set(AdminState.__annotations__)
        else:
            missing = keys - declared - PER_REQUEST
        if missing:
            unknown[str(path.relative_to(PACKAGE.parent))] = sorted(missing)
    assert unknown == {}, f"request.state keys not in app.ServiceState: {unknown}"


def test_the_reader_finds_what_handlers_read():
    read = state_keys_read(
        ast.parse(
            "request.state.pool\nscope['state']['verifier']\nstate.get('user')\njwks.state()\n"
            "page.state.endswith('x')\n"
        )
    )
    assert read == {"pool", "verifier", "user"}
