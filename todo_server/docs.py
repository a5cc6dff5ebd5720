"""The API document and its two readers, served by the service itself.

``/openapi.json`` is built once from ``openapi.build_document``. ``/docs``
(Swagger UI) and ``/redoc`` (ReDoc) load pinned copies of their assets from
``static/vendor`` (refreshed by ``./run.sh vendor-docs``), so they work with no
internet, under a Content-Security-Policy that loads and connects only to this origin,
besides inline styles, ``data:`` images and fonts and ``blob:`` workers, which the UIs need.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from todo_server.auth.guard import ApiRoute
from todo_server.openapi import build_document

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # Both UIs set style attributes from script.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        # ReDoc runs its search index in a worker it creates from a blob.
        "worker-src 'self' blob:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>todo-server API</title>
  <link rel="stylesheet" href="/docs/static/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="/docs/static/docs-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>todo-server API</title>
</head>
<body>
  <div id="redoc"></div>
  <script src="/docs/static/vendor/redoc/redoc.standalone.js"></script>
  <script src="/docs/static/redoc-init.js"></script>
</body>
</html>
"""


def page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def docs_routes(compatible: bool = False) -> list[ApiRoute | Mount]:
    """The document and its pages; the document describes the dialect served (API_DIALECT)."""
    document = json.dumps(build_document(compatible), separators=(",", ":")).encode()

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def swagger(request: Request) -> HTMLResponse:
        return page(SWAGGER_PAGE)

    async def redoc(request: Request) -> HTMLResponse:
        return page(REDOC_PAGE)

    return [
        ApiRoute("/openapi.json", openapi_json, methods=["GET"], public=True),
        ApiRoute("/docs", swagger, methods=["GET"], public=True),
        ApiRoute("/redoc", redoc, methods=["GET"], public=True),
        # Public: a mount serves static files and never authenticates.
        # Found through the package (importlib), wherever it is installed.
        Mount(
            "/docs/static", StaticFiles(packages=[("todo_server", "static")]), name="docs-static"
        ),
    ]
