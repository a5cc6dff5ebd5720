"""Database connection strings made safe to log: every secret replaced by ``***``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Connection parameters whose values are secrets.
SECRET_CONNINFO_KEYS = frozenset({"password", "sslpassword"})
REDACTED = "***"


def redact_url(conninfo: str) -> str:
    """The connection string with every secret replaced by ``***``, safe for logs.

    libpq takes a password in the URL's userinfo, as a ``password=`` query
    parameter, or as ``password=`` in a key=value string; the string is parsed
    as libpq parses it (psycopg's ``conninfo_to_dict``), so each form is found.
    URLs keep their shape; anything that does not parse is not shown at all.
    """
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(unparseable connection string)"
    if not SECRET_CONNINFO_KEYS & params.keys():
        return conninfo
    parts = urlsplit(conninfo)
    if parts.scheme not in ("postgresql", "postgres"):
        return make_conninfo(
            "", **{k: REDACTED if k in SECRET_CONNINFO_KEYS else v for k, v in params.items()}
        )
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hosts}"
    query = urlencode(
        [
            (key, REDACTED if key in SECRET_CONNINFO_KEYS else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:*",
    )
    redacted = parts._replace(netloc=netloc, query=query).geturl()
    # What remains must not hold a secret whatever the parsers disagree on.
    left = conninfo_to_dict(redacted)
    if any(left.get(key) not in (None, REDACTED) for key in SECRET_CONNINFO_KEYS):
        return "(connection string hidden)"
    return redacted
