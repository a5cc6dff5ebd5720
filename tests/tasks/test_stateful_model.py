"""A random walk through the API by three users, checked against a simple model after every step.

Hypothesis drives create / update / complete / delete / restore / list over
real HTTP against a real server. After every step each user must see exactly
their own live tasks with the values they last wrote, and never another user's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from devtools.liveserver import LiveServer
from tests.support.database import settings_env
from tests.support.signing import bearer, frontend_token

USERS = ("ann", "ben", "cat")
FIELDS = ("title", "description", "completed", "priority", "due_at", "tags")

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
titles = text.filter(lambda s: s.strip())
tags = st.lists(titles.map(str.strip), max_size=3, unique=True)
due_dates = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0).isoformat())
field_values = {
    "title": titles,
    "description": st.none() | text,
    "completed": st.booleans(),
    "priority": st.sampled_from(["low", "medium", "high"]),
    "due_at": due_dates,
    "tags": tags,
}
changes = st.fixed_dictionaries({}, optional=field_values).filter(bool)


def normalized(fields: dict[str, Any]) -> dict[str, Any]:
    """What the service stores for these input fields."""
    out = dict(fields)
    if "title" in out:
        out["title"] = out["title"].strip()
    if out.get("due_at") is not None:
        out["due_at"] = datetime.fromisoformat(out["due_at"])
    return out


def visible(task: dict[str, Any]) -> dict[str, Any]:
    """The modelled fields of a task as the service returned it."""
    out = {name: task[name] for name in FIELDS}
    if out["due_at"] is not None:
        out["due_at"] = datetime.fromisoformat(out["due_at"])
    return out


@pytest.mark.slow
def test_random_walks_match_the_model(database_url, db):
    env = settings_env(database_url, DB_POOL_MAX="4")
    with LiveServer(env) as server, httpx2.Client(base_url=server.base_url, timeout=10) as http:
        headers = {user: bearer(frontend_token(user)) for user in USERS}

        class TasksMachine(RuleBasedStateMachine):
            tasks = Bundle("tasks")

            @initialize()
            def empty_database(self) -> None:
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("TRUNCATE tasks, users, idempotency_keys CASCADE")
                self.live: dict[str, dict[str, dict[str, Any]]] = {user: {} for user in USERS}
                self.deleted: dict[str, dict[str, dict[str, Any]]] = {user: {} for user in USERS}

            def owner_of(self, task_id: str) -> str:
                return next(
                    u for u in USERS if task_id in self.live[u] or task_id in self.deleted[u]
                )

            @rule(target=tasks, user=st.sampled_from(USERS), fields=changes)
            def create(self, user: str, fields: dict[str, Any]) -> str:
                fields = {"title": "untitled", **fields}
                r = http.post("/api/tasks", json=fields, headers=headers[user])
                assert r.status_code == 201, r.text
                task = r.json()
                expected = {
                    "description": None,
                    "completed": False,
                    "priority": "medium",
                    "due_at": None,
                    "tags": [],
                    **normalized(fields),
                }
                assert visible(task) == expected
                assert task["user_id"] == user
                self.live[user][task["id"]] = expected
                return task["id"]

            @rule(task_id=tasks, actor=st.sampled_from(USERS), fields=changes)
            def update(self, task_id: str, actor: str, fields: dict[str, Any]) -> None:
                owner = self.owner_of(task_id)
                r = http.patch(f"/api/tasks/{task_id}", json=fields, headers=headers[actor])
                if actor == owner and task_id in self.live[owner]:
                    assert r.status_code == 200, r.text
                    self.live[owner][task_id].update(normalized(fields))
                    assert visible(r.json()) == self.live[owner][task_id]
                else:
                    assert r.status_code == 404, r.text

            @rule(
                task_id=tasks,
                actor=st.sampled_from(USERS),
                completed=st.none() | st.booleans(),
            )
            def complete(self, task_id: str, actor: str, completed: bool | None) -> None:
                owner = self.owner_of(task_id)
                body = {} if completed is None else {"json": {"completed": completed}}
                r = http.patch(f"/api/tasks/{task_id}/complete", headers=headers[actor], **body)
                if actor == owner and task_id in self.live[owner]:
                    assert r.status_code == 200, r.text
                    task = self.live[owner][task_id]
                    task["completed"] = not task["completed"] if completed is None else completed
                    assert visible(r.json()) == task
                    assert (r.json()["completed_at"] is not None) is task["completed"]
                else:
                    assert r.status_code == 404, r.text

            @rule(task_id=tasks, actor=st.sampled_from(USERS))
            def delete(self, task_id: str, actor: str) -> None:
                owner = self.owner_of(task_id)
                r = http.delete(f"/api/tasks/{task_id}", headers=headers[actor])
                if actor == owner and task_id in self.live[owner]:
                    assert r.status_code == 204, r.text
                    self.deleted[owner][task_id] = self.live[owner].pop(task_id)
                else:
                    assert r.status_code == 404, r.text

            @rule(task_id=tasks, actor=st.sampled_from(USERS))
            def restore(self, task_id: str, actor: str) -> None:
                owner = self.owner_of(task_id)
                r = http.post(f"/api/tasks/{task_id}/restore", headers=headers[actor])
                if actor == owner:
                    assert r.status_code == 200, r.text
                    if task_id in self.deleted[owner]:
                        self.live[owner][task_id] = self.deleted[owner].pop(task_id)
                    assert visible(r.json()) == self.live[owner][task_id]
                else:
                    assert r.status_code == 404, r.text

            @invariant()
            def each_user_sees_exactly_their_live_tasks(self) -> None:
                if not hasattr(self, "live"):
                    return
                for user in USERS:
                    r = http.get("/api/tasks", params={"limit": 200}, headers=headers[user])
                    assert r.status_code == 200, r.text
                    listed = r.json()["tasks"]
                    assert {t["user_id"] for t in listed} <= {user}
                    assert {t["id"]: visible(t) for t in listed} == self.live[user]

        run_state_machine_as_test(
            TasksMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=15,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
