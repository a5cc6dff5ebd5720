"""Parsers from a variable's text to its value, and the error they raise.

Each parser takes the variable's name (for the error) and its stripped text,
and returns the value or raises ``ConfigError`` naming the variable. The ones
that take arguments (``whole_number(1, 65535)``) return such a parser.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

#: Role names the migrations may grant to without quoting troubles.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def any_text(name: str, text: str) -> str:
    return text


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum}, got {value}")
        return value

    return parse


def port_or_off(name: str, text: str) -> int | None:
    """A TCP port, or None for ``off`` (a server that is not started)."""
    if text.lower() == "off":
        return None
    return whole_number(1, 65535)(name, text)


def seconds(*, allow_zero: bool, maximum: float | None = None) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise ConfigError(name, f"must be a finite, non-negative number, got {text!r}")
        if value == 0 and not allow_zero:
            raise ConfigError(name, "must be greater than 0")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum:g}, got {text!r}")
        return value

    return parse


def one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def switch(name: str, text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigError(name, f"must be on or off, got {text!r}")


def prepare_threshold(name: str, text: str) -> int | None:
    return None if text.lower() == "none" else whole_number(0)(name, text)


def role_name(name: str, text: str) -> str:
    if not ROLE_NAME.fullmatch(text):
        raise ConfigError(name, "must be a plain role name: lowercase letters, digits and _")
    return text


def origins(name: str, text: str) -> tuple[str, ...]:
    found = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in found:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(name, f"{origin!r} is not an origin like https://app.example.com")
    return found


def trusted_proxies(name: str, text: str) -> tuple[str, ...]:
    """Addresses or networks of proxies trusted to report the client's address."""
    proxies = tuple(part.strip() for part in text.split(",") if part.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(name, f"{proxy!r} is not an IP address or network (or *)") from None
    return proxies


def identifier(name: str, text: str) -> str:
    """One SQL identifier as Better Auth's adapters spell it (quoted where it is used)."""
    if not text or len(text.encode()) > 63 or any(ord(c) < 0x20 or c == "." for c in text):
        raise ConfigError(name, f"{text!r} is not a table or column name")
    return text


def table_name(name: str, text: str) -> tuple[str, ...]:
    """``table`` or ``schema.table``, as its parts."""
    parts = text.split(".")
    if len(parts) > 2:
        raise ConfigError(name, "must be a table name or schema.table")
    return tuple(identifier(name, part) for part in parts)


def three_columns(like: str) -> Callable[[str, str], tuple[str, str, str]]:
    """Three comma-separated column names; the error shows ``like`` as an example."""

    def parse(name: str, text: str) -> tuple[str, str, str]:
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 3:
            raise ConfigError(name, f"must name three columns, like {like}")
        first, second, third = (identifier(name, part) for part in parts)
        return first, second, third

    return parse
