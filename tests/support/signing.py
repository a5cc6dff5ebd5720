"""Minting real tokens for tests: shared-secret HS256, and Ed25519/RSA keys served as a JWKS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

#: The BETTER_AUTH_SECRET every test app gets, and what frontend-minted test tokens are signed with.
TEST_SECRET = "test-secret-" + "x" * 40


def claims(sub: str = "user_1", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 900, **extra}


def hs256(payload: dict[str, Any], secret: str = TEST_SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def frontend_token(sub: str = "user_1", **extra: Any) -> str:
    """What a Next.js frontend sharing BETTER_AUTH_SECRET mints."""
    return hs256(claims(sub, **extra))


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def ed25519(cls, kid: str) -> SigningKey:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        exporter = OKPAlgorithm if self.algorithm == "EdDSA" else RSAAlgorithm
        data = exporter.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(
        self, payload: dict[str, Any], kid: str | None = None, algorithm: str | None = None
    ) -> str:
        return jwt.encode(
            payload,
            self.private,
            algorithm=algorithm or self.algorithm,
            headers={"kid": kid or self.kid},
        )


@dataclass
class JwksServer:
    """A local JWKS endpoint (like Better Auth's /api/auth/jwks) that counts its fetches."""

    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.fetches += 1
                body = json.dumps({"keys": [key.jwk() for key in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/auth/jwks"
        #: What Better Auth's JWT plugin writes into iss and aud: its base URL's origin.
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def claims(self, sub: str = "user_1", **extra: Any) -> dict[str, Any]:
        """A JWT plugin token's claims, with this server's origin as iss and aud."""
        return claims(sub, **{"iss": self.origin, "aud": self.origin, **extra})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    """A frontend's JWKS endpoint serving an Ed25519 key ``ed-1`` and an RSA key ``rsa-1``."""
    server = JwksServer([SigningKey.ed25519("ed-1"), SigningKey.rsa("rsa-1")])
    yield server
    server.close()
