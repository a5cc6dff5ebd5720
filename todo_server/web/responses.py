"""The response every task endpoint sends: a JSON body that is already rendered.

Task JSON is rendered by PostgreSQL when a task is written (the ``body`` column
of the ``tasks`` table) and a page is joined there too, so a handler only has
bytes to send. Starlette's ``Response.__init__`` would still run its general
path on them (render, then build headers by lower-casing and encoding each
name and scanning for Content-Length and Content-Type); here the headers are
built directly, already in their wire form.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

JSON = (b"content-type", b"application/json")


class RenderedJSON(Response):
    """``Response(body, media_type="application/json", headers=...)``, built directly."""

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        status_code: int = 200,
        *,
        etag: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        raw = [(b"content-length", b"%d" % len(body)), JSON]
        if etag is not None:
            raw.append((b"etag", etag.encode("latin-1")))
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw
