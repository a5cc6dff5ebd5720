"""What a syncing client holds, for tests that compare it with the server."""

from __future__ import annotations

from typing import Any


class Replica:
    """What a syncing client holds: the tasks by id, and its sync token."""

    def __init__(self, fetch) -> None:
        self.fetch = fetch  # params -> one page (a dict)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.token: str | None = None

    def sync(self) -> None:
        params: dict[str, Any] = (
            {"sync_token": self.token} if self.token else {"updated_since": "2000-01-01T00:00:00Z"}
        )
        params["limit"] = 3
        while True:
            page = self.fetch(params)
            for task in page["tasks"]:
                if task.get("deleted"):
                    self.tasks.pop(task["id"], None)
                else:
                    self.tasks[task["id"]] = task
            if page["next_cursor"] is None:
                self.token = page["sync_token"]
                return
            params["cursor"] = page["next_cursor"]
