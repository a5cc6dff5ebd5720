"""The ceiling: a bare Starlette app returning a fixed small JSON body.

Served by uvicorn with the same options as the service, it shows what the
framework and server cost before any work of ours.
"""

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"status":"ok"}'


async def fixed(request):
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", fixed, methods=["GET", "POST", "PATCH"])])
