"""The service with its per-request metric calls made no-ops: the B side of the metrics A/B.

``python -m bench.service_without_metrics`` is ``todo-server serve`` (WORKERS=1)
with ``metrics.request_started`` and ``metrics.request_done`` replaced before the
app is built; the middleware looks them up on each request, so it calls these.
Everything else (the pool sampler, refusals, JWKS) is the same and costs
nothing on a list request.
"""

from __future__ import annotations

import sys
from typing import Any

from todo_server import cli, metrics


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


metrics.request_started = _nothing  # type: ignore[assignment]
metrics.request_done = _nothing  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli.main(["serve"]))
