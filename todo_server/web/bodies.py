"""Reading request bodies: JSON objects (and form posts for OAuth2 login), strictly.

415 for a body that is not JSON, 400 for bytes that are not UTF-8 or not JSON,
422 for JSON that is not an object. Field-level checks collect every problem
before answering, so a client sees all of them at once.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from todo_server.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from todo_server.text_rules import is_utf8_text


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone one.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json(body: bytes) -> Any:
    """Strict JSON from bytes: UTF-8 only, no NaN or Infinity, no lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Request body is not valid UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Malformed JSON: nested too deeply") from None
    # Escaped surrogate pairs are fine (json joins them); a lone one cannot be
    # stored or sent on, so refuse it here rather than fail deep inside.
    if SURROGATE_ESCAPE.search(text) and not encodes_as_utf8(data):
        raise BadRequest("Request body contains an unpaired surrogate (\\uD800-\\uDFFF)")
    return data


def encodes_as_utf8(data: Any) -> bool:
    return is_utf8_text(json.dumps(data, ensure_ascii=False))


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or the matching error."""
    return _json_object(request, await request.body())


async def read_optional_json_object(request: Request) -> dict[str, Any] | None:
    """Like ``read_json_object``, but no body (or only whitespace) is None."""
    body = await request.body()
    return _json_object(request, body) if body.strip() else None


def _json_object(request: Request, body: bytes) -> dict[str, Any]:
    if not is_json(media_type(request)):
        raise UnsupportedMediaType()
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ValidationFailed.field("body", "must be a JSON object")
    return data


async def read_form_or_json(request: Request) -> dict[str, Any]:
    """A JSON object, or an ``application/x-www-form-urlencoded`` form as a dict."""
    if media_type(request) == "application/x-www-form-urlencoded":
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Request body is not valid UTF-8") from None
        return dict(parse_qsl(text, keep_blank_values=True))
    return await read_json_object(request)


class FieldErrors:
    """Collects ``{"field", "message"}`` problems; raises them together as one 422."""

    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.details.append({"field": field, "message": message})

    def unknown_fields(self, data: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
        for name in sorted(set(data) - allowed):
            self.add(name, "unknown field")

    def raise_if_any(self) -> None:
        if self.details:
            raise ValidationFailed(details=self.details)
