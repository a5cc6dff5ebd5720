"""Which JWTs are accepted: the algorithms, and the issuer and audience each source must carry.

Two sources of tokens are told apart: HS256 tokens, signed with the shared
secret (by a frontend, or by this service), and tokens verified with keys from
a Better Auth JWKS. Their settings depend on each other and on
``JWT_JWKS_URL``, so they are worked out together here, for ``load_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from todo_server.config.parsers import ConfigError
from todo_server.config.table import env_text

#: HS256 is verified with BETTER_AUTH_SECRET; the others only with keys from the JWKS.
SHARED_SECRET_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = (
    "EdDSA",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)


def accepted_algorithms(env: Mapping[str, str], jwks_url: str | None) -> tuple[str, ...]:
    """JWT_ALGORITHMS, canonically spelt; unset, HS256 plus EdDSA when there is a JWKS."""
    text = env_text(env, "JWT_ALGORITHMS")
    if text is None:
        return ("EdDSA", "HS256") if jwks_url else SHARED_SECRET_ALGORITHMS
    known = {name.lower(): name for name in SHARED_SECRET_ALGORITHMS + JWKS_ALGORITHMS}
    chosen: list[str] = []
    for part in text.split(","):
        name = known.get(part.strip().lower())
        if name is None:
            raise ConfigError(
                "JWT_ALGORITHMS",
                f"{part.strip()!r} is not one of {', '.join(known.values())}",
            )
        if name in JWKS_ALGORITHMS and jwks_url is None:
            raise ConfigError("JWT_ALGORITHMS", f"{name} needs JWT_JWKS_URL to find its keys")
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def issuers_and_audiences(
    env: Mapping[str, str], jwks_url: str | None, algorithms: tuple[str, ...], notes: list[str]
) -> dict[str, str | None]:
    """The iss/aud each token source must carry.

    JWT_ISSUER and JWT_AUDIENCE are the defaults of both sources: a deployment
    that sets only them checks every token against them, and one that serves
    two kinds of frontend sets each source's own.

    JWKS tokens come from Better Auth's JWT plugin, which writes
    ``new URL(baseURL).origin`` into both claims: a URL configured for them
    counts by its origin (``https://app.example.com/auth/`` is
    ``https://app.example.com``), and unset they default to the JWKS URL's
    origin, as Better Auth's own do. ``any`` turns the check off.
    """
    issuer, audience = env_text(env, "JWT_ISSUER"), env_text(env, "JWT_AUDIENCE")
    for name in ("JWT_JWKS_ISSUER", "JWT_JWKS_AUDIENCE"):
        if env_text(env, name) is not None and jwks_url is None:
            raise ConfigError(name, "applies to JWKS tokens; set JWT_JWKS_URL too")
    for name in ("JWT_HS256_ISSUER", "JWT_HS256_AUDIENCE"):
        if env_text(env, name) is not None and "HS256" not in algorithms:
            raise ConfigError(name, "applies to HS256 tokens, which JWT_ALGORITHMS leaves out")
    jwks: dict[str, str | None] = {"jwks_issuer": None, "jwks_audience": None}
    if jwks_url is not None:
        jwks_origin = url_origin(jwks_url)
        for key, name, fallback in (
            ("jwks_issuer", "JWT_JWKS_ISSUER", issuer),
            ("jwks_audience", "JWT_JWKS_AUDIENCE", audience),
        ):
            given = env_text(env, name)
            value = given or fallback
            if value is None:
                jwks[key] = jwks_origin
            elif value.lower() == "any":
                notes.append(f"{name}=any: the {key.split('_')[1]} of JWKS tokens is not checked")
            else:
                origin = url_origin(value)
                if origin is not None and origin != value:
                    source = name if given else name.replace("JWKS_", "")
                    notes.append(
                        f"{source} {value!r} is taken as its origin {origin!r} for JWKS tokens,"
                        " as Better Auth writes it"
                    )
                jwks[key] = origin or value
        if jwks["jwks_issuer"] is not None and jwks["jwks_issuer"] != jwks_origin:
            notes.append(
                f"the JWKS issuer {jwks['jwks_issuer']!r} is not JWT_JWKS_URL's origin"
                f" {jwks_origin!r}: Better Auth writes its base URL's origin; check both"
            )
    return {
        "hs256_issuer": env_text(env, "JWT_HS256_ISSUER") or issuer,
        "hs256_audience": env_text(env, "JWT_HS256_AUDIENCE") or audience,
        **jwks,
    }


def url_origin(value: str) -> str | None:
    """The origin of an http(s) URL as a browser's ``new URL(value).origin``; None if not one.

    Scheme and host in lower case, the port only when it is not the scheme's default.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")
