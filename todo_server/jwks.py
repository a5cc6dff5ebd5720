"""The public keys of a Better Auth frontend, fetched from its JWKS URL and cached.

PyJWT's own ``PyJWKClient`` fetches with blocking urllib on the request path;
here the fetch runs in a worker thread, so the event loop keeps serving, and it
is rate-limited: a token with an unknown ``kid`` triggers at most one fetch per
``refresh_interval`` seconds, however many such tokens arrive. A flood of
made-up key ids therefore costs nothing but 401s. Keys rotate: a new ``kid``
that shows up in the JWKS is found by the next allowed fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

logger = logging.getLogger("todo_server.jwks")

FETCH_TIMEOUT_SECONDS = 3.0
MAX_JWKS_BYTES = 256 * 1024
#: Cached keys are refreshed after this long even without an unknown kid, so a
#: key the frontend withdrew stops being accepted.
MAX_AGE_SECONDS = 3600.0


class JwksUnavailable(Exception):
    """The JWKS has never been fetched successfully; tokens cannot be checked yet."""


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Usable signing keys by kid; keys PyJWT cannot use, or without a kid, are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            logger.warning("skipping JWKS key %r: %s", entry.get("kid"), exc)
    return keys


def fetch_document(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> Any:
    """GET the JWKS (blocking; run it in a thread)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        return json.loads(response.read(MAX_JWKS_BYTES + 1)[:MAX_JWKS_BYTES])


class JwksCache:
    """Keys by kid, refetched on an unknown kid at most once per ``refresh_interval``."""

    def __init__(
        self,
        url: str,
        refresh_interval: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str], Any] = fetch_document,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid, fetching the JWKS again when allowed; None if unknown."""
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        async with self._lock:
            # Another request may have fetched while this one waited for the lock.
            key = self._keys.get(kid)
            if (key is None or self._stale()) and self._may_fetch():
                await self._refresh()
            key = self._keys.get(kid)
        if key is None and self._fetched_at is None:
            raise JwksUnavailable(self.url)
        return key

    def _stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at > MAX_AGE_SECONDS

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or (
            self._clock() - self._attempted_at >= self.refresh_interval
        )

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            document = await asyncio.to_thread(self._fetch, self.url)
            keys = parse_jwks(document)
        except Exception as exc:  # network, HTTP or JSON trouble: keep the keys we had
            logger.warning("fetching the JWKS failed: %s: %s", type(exc).__name__, exc)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        logger.info("fetched the JWKS: %d key(s)", len(keys))
