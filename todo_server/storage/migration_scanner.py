"""Finding the statements of a migration file that would end its transaction.

A migration runs inside one transaction with its bookkeeping row; a ``COMMIT``
in the file would commit half of it, leave the rest to run outside any
transaction and the row unwritten, and break the next run. The runner refuses
such files before running anything, so this module reads SQL the way
PostgreSQL's lexer does for what matters here: comments (``--``, nested
``/* */``), quoted strings (``'...'``, ``E'...'`` with backslash escapes),
quoted identifiers and dollar-quoted bodies (``$$...$$``, ``$fn$...$fn$``) are
skipped, and each remaining statement's first words are checked. A function
body written ``BEGIN ATOMIC ... END`` holds semicolons of its own and is read
as one statement.
"""

from __future__ import annotations

import re

#: Statements that begin, end or split a transaction (and ``END``, a synonym of COMMIT).
TRANSACTION_CONTROL = frozenset(
    {"begin", "commit", "end", "rollback", "abort", "start", "savepoint", "release", "prepare"}
)

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z_]+")


def _skip_block_comment(sql: str, i: int) -> int:
    depth = 0
    while i < len(sql):
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return i


def _skip_quoted(sql: str, i: int, quote: str, backslashes: bool) -> int:
    """Index just past the quoted text starting at ``sql[i] == quote``."""
    i += 1
    while i < len(sql):
        char = sql[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == quote:
            if sql.startswith(quote * 2, i):  # a doubled quote stands for itself
                i += 2
                continue
            return i + 1
        i += 1
    return i


def statements(sql: str) -> list[str]:
    """The statements, split as PostgreSQL splits them, comments and quoted text blanked."""
    found: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(sql):
        char = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            current.append(" ")
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
            current.append(" ")
        elif char in "eE" and sql.startswith("'", i + 1) and not _is_word_char(sql, i - 1):
            i = _skip_quoted(sql, i + 1, "'", backslashes=True)
            current.append(" '' ")
        elif char == "'":
            i = _skip_quoted(sql, i, "'", backslashes=False)
            current.append(" '' ")
        elif char == '"':
            i = _skip_quoted(sql, i, '"', backslashes=False)
            current.append(' "" ')
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not _is_word_char(sql, i - 1):
            end = sql.find(tag.group(), tag.end())
            i = len(sql) if end < 0 else end + len(tag.group())
            current.append(" $$ ")
        elif char == ";" and not _inside_atomic_body("".join(current)):
            found.append("".join(current))
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    if "".join(current).strip():
        found.append("".join(current))
    return [statement.strip() for statement in found if statement.strip()]


_BEGIN_ATOMIC = re.compile(r"\bbegin\s+atomic\b", re.IGNORECASE)
_ENDS_WITH_END = re.compile(r"\bend\s*$", re.IGNORECASE)


def _inside_atomic_body(statement: str) -> bool:
    """Whether a ``;`` after ``statement`` is inside a ``BEGIN ATOMIC ... END`` body."""
    return bool(_BEGIN_ATOMIC.search(statement)) and not _ENDS_WITH_END.search(statement)


def _is_word_char(sql: str, i: int) -> bool:
    return i >= 0 and (sql[i].isalnum() or sql[i] in "_$")


def transaction_control(sql: str) -> list[str]:
    """The statements of ``sql`` that would begin, end or split its transaction."""
    refused = []
    for statement in statements(sql):
        words = _WORD.findall(statement.lower())
        if not words or words[0] not in TRANSACTION_CONTROL:
            continue
        if words[0] == "prepare" and words[1:2] != ["transaction"]:
            continue  # PREPARE name AS ...: a prepared statement, not two-phase commit
        refused.append(" ".join(statement.split())[:60])
    return refused
