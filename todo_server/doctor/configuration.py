"""Checks of the settings alone: the secret, CORS origins, production."""

from __future__ import annotations

from todo_server.config import GENERATED_SECRET_PREFIX, Settings, url_origin
from todo_server.config.settings import KNOWN_PLACEHOLDER_SECRETS
from todo_server.doctor.findings import FAIL, OK, WARN, Finding


def settings_findings(settings: Settings) -> list[Finding]:
    return [secret_finding(settings), cors_finding(settings), production_finding(settings)]


def secret_finding(settings: Settings) -> Finding:
    secret = settings.secret
    if secret.lower() in KNOWN_PLACEHOLDER_SECRETS or len(set(secret)) < 6:
        return Finding(
            "secret",
            FAIL if settings.is_production else WARN,
            "BETTER_AUTH_SECRET is a placeholder from an example",
            "generate one: openssl rand -base64 32",
        )
    if secret.startswith(GENERATED_SECRET_PREFIX):
        return Finding("secret", OK, "BETTER_AUTH_SECRET was generated for local use by run.sh")
    return Finding("secret", OK, f"BETTER_AUTH_SECRET has {len(secret)} characters")


def cors_finding(settings: Settings) -> Finding:
    origins = settings.allowed_origins
    if "*" in origins:
        return Finding(
            "cors",
            WARN,
            "ALLOWED_ORIGINS is '*': any web page may call the API",
            "list the origins",
        )
    plain = [o for o in origins if o.startswith("http://") and url_origin(o) is not None]
    if settings.is_production and any("localhost" not in o and "127.0.0.1" not in o for o in plain):
        return Finding(
            "cors", WARN, f"plain http origins in production: {', '.join(plain)}", "use https"
        )
    listed = ", ".join(origins) if origins else "none (browsers cannot call the API)"
    return Finding("cors", OK, f"origins well formed: {listed}")


def production_finding(settings: Settings) -> Finding:
    if not settings.is_production:
        return Finding("production", OK, f"ENVIRONMENT is {settings.environment}")
    problems = []
    if settings.jwks_url is not None and not settings.jwks_url.startswith("https://"):
        problems.append("JWT_JWKS_URL is not https")
    if settings.secret.startswith(GENERATED_SECRET_PREFIX):
        problems.append("BETTER_AUTH_SECRET is a generated local secret")
    if "*" in settings.allowed_origins:
        problems.append("ALLOWED_ORIGINS is '*'")
    if problems:
        return Finding("production", FAIL, "; ".join(problems), "see docs/deploy.md")
    return Finding("production", OK, "https JWKS, an own secret, listed origins")
