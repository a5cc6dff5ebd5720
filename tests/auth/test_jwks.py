"""The JWKS cache on its own: an injected clock and fetch function, no network.

When it fetches (at once for the first unknown kid, then a cooldown after a
miss; a short backoff after failures), what a withdrawn key does to verified
tokens, and the state /health reports.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support.signing import SigningKey, claims
from todo_server.auth.identity import InvalidToken, JwksUnavailable
from todo_server.auth.jwks import MAX_AGE_SECONDS, JwksCache
from todo_server.auth.tokens import TokenVerifier

URL = "https://app.example.com/api/auth/jwks"
APP = "https://app.example.com"
#: The cooldown after a miss that the scenarios below count their seconds against.
REFRESH_INTERVAL = 30.0


class Frontend:
    """The JWKS endpoint as a fetch function, on a clock the test moves."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.now = 1000.0
        self.up = True
        self.fetches = 0

    def clock(self) -> float:
        return self.now

    def fetch(self, url: str) -> Any:
        assert url == URL
        self.fetches += 1
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        return {"keys": [key.jwk() for key in self.keys]}

    def cache(self, refresh_interval: float = REFRESH_INTERVAL, **kwargs: Any) -> JwksCache:
        return JwksCache(URL, refresh_interval, clock=self.clock, fetch=self.fetch, **kwargs)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_rotated_key_is_fetched_at_once_after_a_fetch_seconds_ago():
    old, new = SigningKey.ed25519("old"), SigningKey.ed25519("new")
    frontend = Frontend(old)
    cache = frontend.cache()

    async def scenario() -> None:
        assert await cache.key_for("old") is not None
        frontend.keys = [old, new]
        frontend.now += 2  # well inside the 30 s refresh interval
        assert await cache.key_for("new") is not None
        assert frontend.fetches == 2
        # It found what it was fetched for, so the next rotation is followed at once too.
        newer = SigningKey.ed25519("newer")
        frontend.keys = [new, newer]
        frontend.now += 2
        assert await cache.key_for("newer") is not None
        assert frontend.fetches == 3

    run(scenario())


def test_a_flood_of_made_up_kids_costs_one_fetch_per_refresh_interval():
    frontend = Frontend(SigningKey.ed25519("real"))
    cache = frontend.cache(refresh_interval=30.0)

    async def scenario() -> None:
        assert await cache.key_for("real") is not None
        for _ in range(300):
            assert await cache.key_for(uuid.uuid4().hex) is None
            frontend.now += 0.05  # 300 kids in 15 s
        assert frontend.fetches == 2  # the first made-up kid, then the cooldown
        frontend.now += 15.5  # 30 s after the miss
        for _ in range(300):
            assert await cache.key_for(uuid.uuid4().hex) is None
        assert frontend.fetches == 3
        # The known key needs no fetch during all this.
        assert await cache.key_for("real") is not None
        assert frontend.fetches == 3

    run(scenario())


def test_a_rotation_after_a_miss_waits_for_the_cooldown():
    """The price of the flood protection: after a fetch that did not list a kid
    (a made-up one), a real rotation is followed only when the cooldown is over."""
    frontend = Frontend(SigningKey.ed25519("real"))
    cache = frontend.cache(refresh_interval=30.0)

    async def scenario() -> None:
        assert await cache.key_for("made-up") is None
        rotated = SigningKey.ed25519("rotated")
        frontend.keys.append(rotated)
        frontend.now += 10
        assert await cache.key_for("rotated") is None
        frontend.now += 20
        assert await cache.key_for("rotated") is not None

    run(scenario())


def test_start_up_retries_with_a_short_backoff_then_refreshes_hourly():
    frontend = Frontend(SigningKey.ed25519("k"))
    frontend.up = False
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        frontend.now += seconds
        if len(waits) == 6:
            frontend.up = True  # the frontend comes up
        if seconds >= MAX_AGE_SECONDS - 1:
            raise asyncio.CancelledError

    cache = frontend.cache(sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        run(cache.keep_fresh())
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, MAX_AGE_SECONDS]
    assert frontend.fetches == 7
    assert cache.state() == ("ok", MAX_AGE_SECONDS)


def test_requests_before_the_first_fetch_follow_the_same_backoff():
    frontend = Frontend(SigningKey.ed25519("k"))
    frontend.up = False
    cache = frontend.cache(refresh_interval=30.0)

    async def scenario() -> None:
        for _ in range(50):
            with pytest.raises(JwksUnavailable):
                await cache.key_for("k")
        assert frontend.fetches == 1
        frontend.now += 0.5
        with pytest.raises(JwksUnavailable):
            await cache.key_for("k")
        assert frontend.fetches == 2
        frontend.up = True
        frontend.now += 1.0  # not the 30 s refresh interval
        assert await cache.key_for("k") is not None
        assert frontend.fetches == 3

    run(scenario())


def test_keys_survive_a_failed_fetch_and_the_state_says_so():
    old = SigningKey.ed25519("old")
    frontend = Frontend(old)
    cache = frontend.cache()
    assert cache.state() == ("unavailable", None)

    async def scenario() -> None:
        assert await cache.key_for("old") is not None
        assert cache.state() == ("ok", 0.0)
        frontend.now += 5
        frontend.up = False
        assert await cache.key_for("unknown") is None  # the refetch failed
        assert cache.state() == ("stale", 5.0)
        assert await cache.key_for("old") is not None
        frontend.up = True
        frontend.now += 1
        assert await cache.key_for("unknown") is None  # the retry worked
        assert cache.state() == ("ok", 0.0)
        frontend.now += MAX_AGE_SECONDS + 1
        assert cache.state() == ("stale", MAX_AGE_SECONDS + 1)

    run(scenario())


# --- withdrawn keys and the verified-token cache ------------------------------------


@pytest.fixture
def jwks_settings(make_settings):
    return make_settings(
        JWT_JWKS_URL=URL,
        JWT_ALGORITHMS="EdDSA,HS256",
        JWT_FRONTEND_HS256="on",  # a minted token below: not forgotten with a JWKS key
        JWT_JWKS_ISSUER=APP,
        JWT_JWKS_AUDIENCE=APP,
    )


def better_auth_claims(sub: str = "ba-user") -> dict[str, Any]:
    return claims(sub, iss=APP, aud=APP)


def test_a_withdrawn_key_is_revoked_at_once_even_for_verified_tokens(jwks_settings):
    old, new = SigningKey.ed25519("old"), SigningKey.ed25519("new")
    frontend = Frontend(old)
    verifier = TokenVerifier(jwks_settings, jwks=frontend.cache())
    remembered = old.sign(better_auth_claims())

    async def scenario() -> None:
        assert (await verifier.verify(remembered)).id == "ba-user"
        assert (await verifier.verify(remembered)).id == "ba-user"  # from the cache
        frontend.keys = [new]  # the frontend withdraws "old"
        frontend.now += 2
        assert (await verifier.verify(new.sign(better_auth_claims()))).id == "ba-user"
        with pytest.raises(InvalidToken, match="unknown kid 'old'"):
            await verifier.verify(remembered)
        with pytest.raises(InvalidToken, match="unknown kid 'old'"):
            await verifier.verify(old.sign(better_auth_claims()))

    run(scenario())


def test_verified_tokens_meet_the_hourly_refresh_too(jwks_settings):
    """No unknown kid ever shows up: the hourly refresh still revokes a withdrawn key."""
    old = SigningKey.ed25519("old")
    frontend = Frontend(old)
    verifier = TokenVerifier(jwks_settings, jwks=frontend.cache())
    token = old.sign(better_auth_claims())

    async def scenario() -> None:
        assert (await verifier.verify(token)).id == "ba-user"
        frontend.keys = [SigningKey.ed25519("new")]
        frontend.now += 60
        assert (await verifier.verify(token)).id == "ba-user"  # remembered, keys fresh
        frontend.now += MAX_AGE_SECONDS
        with pytest.raises(InvalidToken, match="unknown kid 'old'"):
            await verifier.verify(token)
        assert frontend.fetches == 2

    run(scenario())


def test_withdrawing_a_key_forgets_only_what_it_verified(jwks_settings, monkeypatch):
    from todo_server.auth import tokens as tokens_module

    first, second = SigningKey.ed25519("first"), SigningKey.ed25519("second")
    frontend = Frontend(first, second)
    verifier = TokenVerifier(jwks_settings, jwks=frontend.cache())
    by_second = second.sign(better_auth_claims("second-user"))
    hs256_token = tokens_module.jwt.encode(
        claims("minted"), jwks_settings.secret, algorithm="HS256"
    )

    async def scenario() -> None:
        await verifier.verify(first.sign(better_auth_claims()))
        await verifier.verify(by_second)
        await verifier.verify(hs256_token)
        frontend.keys = [second]
        frontend.now += 1
        assert await verifier.jwks.key_for("unknown") is None  # the refetch that withdraws
        decoded: list[str] = []
        real_decode = tokens_module.jwt.decode
        monkeypatch.setattr(
            tokens_module.jwt,
            "decode",
            lambda t, *a, **k: decoded.append(t) or real_decode(t, *a, **k),
        )
        assert (await verifier.verify(by_second)).id == "second-user"
        assert (await verifier.verify(hs256_token)).id == "minted"
        assert decoded == []  # both still answered from the cache

    run(scenario())


class DrippingJwks:
    """A JWKS endpoint that answers its head at once, then a byte of body every 0.2 s."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/jwks"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
            while not self.stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.slow
def test_a_jwks_dripped_a_byte_at_a_time_is_given_up_at_the_fetch_deadline():
    """Each read waits at most the timeout; the whole fetch at most its deadline (plus one read)."""
    import time

    from todo_server.auth.jwks import fetch_document

    server = DrippingJwks()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            fetch_document(server.url, timeout=1.0, deadline=1.0)
    finally:
        server.close()
    assert time.monotonic() - started < 2.5
