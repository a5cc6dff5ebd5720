"""Shared helpers for the tasks API tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.signing import bearer, frontend_token
from todo_server.tasks.store import TASK_FIELDS

PREFIXES = ("/api/tasks", "/api/{user}/tasks", "/users/{user}/tasks")
TASK_KEYS = set(TASK_FIELDS)


class User:
    """A user with a frontend-minted token, calling the API under one prefix."""

    def __init__(self, client, user_id: str, prefix: str = PREFIXES[0]) -> None:
        self.client = client
        self.id = user_id
        self.headers = bearer(frontend_token(user_id, email=f"{user_id}@example.com"))
        self.base = prefix.format(user=user_id)

    def url(self, suffix: str = "") -> str:
        return self.base + suffix

    def request(self, method: str, suffix: str = "", **kwargs: Any):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, self.url(suffix), headers=headers, **kwargs)

    def create(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("title", "A task")
        r = self.request("POST", json=fields)
        assert r.status_code == 201, r.text
        return r.json()

    def list(self, **params: Any) -> dict[str, Any]:
        r = self.request("GET", params=params)
        assert r.status_code == 200, r.text
        return r.json()


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- fixtures (a pytest plugin: tests/conftest.py loads this module) ---


@pytest.fixture
def api_prefix() -> str:
    """The prefix ``ada`` and ``bob`` call the tasks API under. A module that checks every
    prefix overrides it with ``@pytest.fixture(params=PREFIXES)``."""
    return PREFIXES[0]


@pytest.fixture
def ada(client: TestClient, api_prefix: str) -> User:
    """A user with a frontend-minted token."""
    return User(client, "ada", api_prefix)


@pytest.fixture
def bob(client: TestClient, api_prefix: str) -> User:
    """Another user, to check what Ada must not see."""
    return User(client, "bob", api_prefix)
