"""The public keys of a Better Auth frontend, fetched from its JWKS URL and cached.

PyJWT's own ``PyJWKClient`` fetches with blocking urllib on the request path;
here the fetch runs in a worker thread, so the event loop keeps serving.

When fetches happen:

- at start-up (``keep_fresh``, run by the app's lifespan), retried after 0.5, 1,
  2, 4, then every 5 seconds while the frontend does not answer, so a service
  started before its frontend serves within seconds of the frontend coming up;
  then again every ``MAX_AGE_SECONDS``;
- at once for the first unknown ``kid`` after a fetch: a rotated key is found
  before any token signed with it is refused. A fetch that was made for a kid
  and did not find it starts a cooldown of ``refresh_interval``
  (JWT_JWKS_REFRESH_INTERVAL): further unknown kids refetch only once it is
  over, so a flood of made-up key ids costs one fetch per interval and
  otherwise nothing but 401s;
- after a failed fetch, no sooner than the backoff above (the keys already
  known stay in use).

A kid that a fetch no longer lists is withdrawn: its key is gone, and the
``on_withdrawn`` callbacks (the verified-token cache) forget what it verified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from todo_server import metrics
from todo_server.auth.identity import JwksUnavailable

logger = logging.getLogger("todo_server.jwks")

FETCH_TIMEOUT_SECONDS = 3.0
#: The whole fetch, head and body: past it the fetch fails and the known keys stay in use.
FETCH_DEADLINE_SECONDS = 10.0
MAX_JWKS_BYTES = 256 * 1024
#: Cached keys are refreshed after this long even without an unknown kid, so a
#: key the frontend withdrew stops being accepted.
MAX_AGE_SECONDS = 3600.0
#: Waits after consecutive failed fetches: 0.5, 1, 2, 4, 5, 5, ... seconds.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 5.0
#: While the frontend stays away, one warning per this many failed fetches (~1 a minute).
WARN_EVERY_FAILURES = 12


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


def fetch_document(
    url: str, timeout: float = FETCH_TIMEOUT_SECONDS, deadline: float = FETCH_DEADLINE_SECONDS
) -> Any:
    """GET the JWKS (blocking; run it in a thread), within ``deadline`` seconds in all.

    ``timeout`` bounds each wait for the socket; a server that drips its body a
    byte at a time never trips it, so the body is read in pieces against the
    deadline too. The fetch holds the cache's lock, and every request with an
    unknown kid waits on that lock.
    """
    give_up_at = time.monotonic() + deadline
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        body = bytearray()
        while len(body) <= MAX_JWKS_BYTES:
            if time.monotonic() > give_up_at:
                raise TimeoutError(f"the JWKS took over {deadline:g} s to arrive")
            piece = response.read1(MAX_JWKS_BYTES + 1 - len(body))
            if not piece:
                break
            body += piece
        return json.loads(bytes(body[:MAX_JWKS_BYTES]))


class JwksCache:
    """Keys by kid; see the module docstring for when the JWKS is fetched again."""

    def __init__(
        self,
        url: str,
        refresh_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str], Any] = fetch_document,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        algorithms: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        #: JWT_ALGORITHMS' asymmetric ones: each fetch warns about any no key offers.
        self.algorithms = tuple(a for a in algorithms if a != "HS256")
        self._unoffered: frozenset[str] = frozenset()
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._fetch = fetch
        self._sleep = sleep
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._failures = 0  # failed attempts since the last successful one
        self._missed = False  # the last fetch was for a kid, and did not list it
        self._withdrawn_callbacks: list[Callable[[frozenset[str]], None]] = []
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    def _warn_about_unoffered_algorithms(self, keys: dict[str, jwt.PyJWK]) -> None:
        """Say so (once per change) when JWT_ALGORITHMS names one no key of the JWKS signs with.

        The common mistake: the frontend's JWT plugin signs with EdDSA, its
        default, and the service was told RS256 (or the other way round); every
        token is then refused as "algorithm not allowed".
        """
        offered = {key.algorithm_name for key in keys.values()}
        unoffered = frozenset(a for a in self.algorithms if a not in offered)
        if unoffered and unoffered != self._unoffered:
            logger.warning(
                "JWT_ALGORITHMS names %s, which no key of the JWKS signs with (it offers %s)",
                ", ".join(sorted(unoffered)),
                ", ".join(sorted(offered)) or "nothing",
            )
        self._unoffered = unoffered

    def on_withdrawn(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call ``callback(kids)`` whenever a fetch no longer lists keys it listed before."""
        self._withdrawn_callbacks.append(callback)

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid, fetching the JWKS again when allowed; None if unknown."""
        key = self._keys.get(kid)
        if key is not None and not self.stale():
            return key
        async with self._lock:
            # Another request may have fetched while this one waited for the lock.
            key = self._keys.get(kid)
            if key is None and self._clock() >= self._next_fetch_for_unknown_kid():
                await self._refresh(wanted=kid)
            elif key is not None and self.stale() and self._clock() >= self._next_retry():
                await self._refresh()
            key = self._keys.get(kid)
        if key is None and self._fetched_at is None:
            raise JwksUnavailable(self.url)
        return key

    def stale(self) -> bool:
        """Whether the keys are older than ``MAX_AGE_SECONDS`` (a refresh is due)."""
        return self._fetched_at is not None and self._clock() - self._fetched_at > MAX_AGE_SECONDS

    def state(self) -> tuple[str, float | None]:
        """``ok``, ``stale`` (keys known, but the last fetch failed or they are past
        their age) or ``unavailable`` (never fetched); and the seconds since the last
        successful fetch."""
        if self._fetched_at is None:
            return "unavailable", None
        age = self._clock() - self._fetched_at
        return ("stale" if self._failures or age > MAX_AGE_SECONDS else "ok"), age

    def has_keys(self) -> bool:
        """Whether a fetch has given usable signing keys (kept while later fetches fail)."""
        return bool(self._keys)

    async def keep_fresh(self) -> None:
        """Fetch now, retrying with a short backoff until it works; then every
        ``MAX_AGE_SECONDS``. Runs until cancelled (the app's lifespan owns it)."""
        while True:
            delay = self._seconds_until_due()
            if delay > 0:
                await self._sleep(delay)
                continue
            async with self._lock:
                if self._seconds_until_due() <= 0:  # a request may have fetched meanwhile
                    await self._refresh()

    def _seconds_until_due(self) -> float:
        if self._failures:
            return self._next_retry() - self._clock()
        if self._fetched_at is None:
            return 0.0
        return self._fetched_at + MAX_AGE_SECONDS - self._clock()

    def _next_retry(self) -> float:
        if not self._failures or self._attempted_at is None:
            return -math.inf
        backoff = BACKOFF_FIRST_SECONDS * (1 << min(self._failures - 1, 16))
        return self._attempted_at + min(backoff, BACKOFF_MAX_SECONDS)

    def _next_fetch_for_unknown_kid(self) -> float:
        if self._failures:
            return self._next_retry()
        if self._missed and self._attempted_at is not None:
            return self._attempted_at + self.refresh_interval
        return -math.inf

    async def _refresh(self, wanted: str | None = None) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            document = await asyncio.to_thread(self._fetch, self.url)
            keys = parse_jwks(document)
        except Exception as exc:  # network, HTTP or JSON trouble: keep the keys we had
            metrics.jwks_fetched(ok=False)
            self._failures += 1
            if self._failures == 1 or self._failures % WARN_EVERY_FAILURES == 0:
                logger.warning(
                    "fetching the JWKS failed (%d time(s) in a row): %s: %s",
                    self._failures,
                    type(exc).__name__,
                    exc,
                )
            return
        metrics.jwks_fetched(ok=True)
        withdrawn = frozenset(self._keys.keys() - keys.keys())
        self._keys = keys
        self._fetched_at = self._clock()
        self._failures = 0
        self._missed = wanted is not None and wanted not in keys
        logger.info("fetched the JWKS: %d key(s)", len(keys))
        self._warn_about_unoffered_algorithms(keys)
        if withdrawn:
            logger.warning(
                "the JWKS no longer lists key(s) %s; tokens signed with them are refused",
                ", ".join(sorted(kid[:64] for kid in withdrawn)),
            )
            for callback in self._withdrawn_callbacks:
                callback(withdrawn)
