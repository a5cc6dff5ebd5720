"""Finding the statements of a migration file that would end its transaction.

A migration runs inside one transaction with its bookkeeping row; a ``COMMIT``
in the file would commit half of it, leave the rest to run outside any
transaction and the row unwritten, and break the next run. The runner refuses
such files before running anything, so this module reads SQL the way
PostgreSQL's lexer does (with ``standard_conforming_strings`` on, which the
runner pins): comments (``--``, nested ``/* */``), quoted strings (``'...'``,
``E'...'`` with backslash escapes, each continued across a newline as the
server continues it), quoted identifiers and dollar-quoted bodies (``$$...$$``,
``$fn$...$fn$``, tags of any letters) are skipped, and each statement's first
word is checked.

A statement ends at a ``;`` outside parentheses, except inside the body of
``CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END``, which
holds semicolons of its own. Inside such a body ``CASE ... END`` nests, as in
psql's own splitter. Where a word could be either (``x.begin atomic``, ``1 AS
case``, ``t.end``: a label, not a keyword), the reading errs towards more
statements: a wrong split can only refuse a file, never hide a ``COMMIT``.
A file the server cannot parse runs nothing at all, so only valid SQL matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

#: Statements that begin, end or split a transaction (and ``END``, a synonym of COMMIT).
TRANSACTION_CONTROL = frozenset(
    {"begin", "commit", "end", "rollback", "abort", "start", "savepoint", "release", "prepare"}
)

# PostgreSQL's identifier characters: ASCII letters, digits, _ and $, and every
# non-ASCII character (its lexer takes any byte from 0x80 up).
_IDENT_START = r"A-Za-z_\u0080-\U0010ffff"
_WORD = re.compile(rf"[{_IDENT_START}][{_IDENT_START}0-9$]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_DOLLAR_TAG = re.compile(rf"\$(?:[{_IDENT_START}][{_IDENT_START}0-9]*)?\$")
_LINE_END = re.compile(r"[\n\r]")
# Between two string literals that PostgreSQL joins into one: white space and
# ``--`` comments holding at least one newline.
_CONTINUATION = re.compile(r"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f\v]+|--[^\n\r]*[\n\r])*'")

# What may follow a column label (``SELECT 1 case FROM t``, ``SELECT x case;``): the end of
# a target list. A CASE expression never goes on with one of these, all reserved words.
_AFTER_LABEL = frozenset(
    [
        ",",
        ";",
        ")",
        "into",
        "from",
        "where",
        "group",
        "having",
        "window",
        "union",
        "intersect",
        "except",
        "order",
        "limit",
        "offset",
        "fetch",
        "for",
        "on",
        "with",
        "returning",
        "end",
    ]
)


@dataclass(frozen=True)
class Token:
    kind: str  # "word" (lower-cased), "literal", "name" (quoted), "punct", ";"
    text: str
    start: int


def _is_ident_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "_$") or not char.isascii()


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


def _skip_string(sql: str, i: int, backslashes: bool) -> int:
    """Past a string literal and every literal the server joins to it."""
    end = _skip_quoted(sql, i, "'", backslashes)
    while (joined := _CONTINUATION.match(sql, end)) is not None:
        end = _skip_quoted(sql, joined.end() - 1, "'", backslashes)
    return end


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


def tokens(sql: str) -> Iterator[Token]:
    """The tokens of ``sql`` that matter for splitting it; comments and white space dropped."""
    i = 0
    while i < len(sql):
        char = sql[i]
        if char in " \t\n\r\f\v":  # the server's white space; U+00A0 and others are letters
            i += 1
        elif sql.startswith("--", i):
            line_end = _LINE_END.search(sql, i)
            i = len(sql) if line_end is None else line_end.start()
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif char in "eE" and sql.startswith("'", i + 1):
            end = _skip_string(sql, i + 1, backslashes=True)
            yield Token("literal", sql[i:end], i)
            i = end
        elif char == "'":
            end = _skip_string(sql, i, backslashes=False)
            yield Token("literal", sql[i:end], i)
            i = end
        elif char == '"':
            end = _skip_quoted(sql, i, '"', backslashes=False)
            yield Token("name", sql[i:end], i)
            i = end
        elif char == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(), tag.end())
            end = len(sql) if close < 0 else close + len(tag.group())
            yield Token("literal", sql[i:end], i)
            i = end
        elif word := _WORD.match(sql, i):
            # U&'...', B'...', X'...', N'...' are a word and a plain string here,
            # which skips the same text as the server.
            yield Token("word", word.group().lower(), i)
            i = word.end()
        elif number := _NUMBER.match(sql, i):
            yield Token("literal", number.group(), i)
            i = number.end()
        elif char == "$":  # a parameter ($1) or a stray dollar
            end = i + 1
            while end < len(sql) and _is_ident_char(sql[end]):
                end += 1
            yield Token("literal", sql[i:end], i)
            i = end
        else:
            yield Token(";" if char == ";" else "punct", char, i)
            i += 1


def _creates_routine(words: list[str]) -> bool:
    """Whether a statement's first words are CREATE [OR REPLACE] FUNCTION|PROCEDURE."""
    if words[:3] == ["create", "or", "replace"]:
        words = ["create", *words[3:]]
    return words[:1] == ["create"] and words[1:2] in (["function"], ["procedure"])


def _is_case_expression(previous: Token | None, following: Token | None) -> bool:
    """Whether a CASE opens an expression (which END closes) rather than being a label."""
    if previous is not None and previous.text in (".", "as"):
        return False  # t.case, 1 AS case
    return following is None or following.text not in _AFTER_LABEL


def statements(sql: str) -> list[str]:
    """The statements of ``sql`` as the server splits them, each as its source text."""
    found: list[str] = []
    first: Token | None = None
    last: Token | None = None
    previous: Token | None = None
    words: list[str] = []  # the statement's first words, to recognise CREATE FUNCTION
    depth = 0  # parentheses
    body = 0  # 1 inside a BEGIN ATOMIC body, more inside CASE ... END within it
    found_tokens = list(tokens(sql))
    for index, token in enumerate(found_tokens):
        if token.kind == ";" and depth == 0 and body == 0:
            if first is not None and last is not None:
                found.append(sql[first.start : last.start + len(last.text)])
            first = last = previous = None
            words = []
            continue
        if first is None:
            first = token
        last = token
        if token.kind == "punct" and token.text == "(":
            depth += 1
        elif token.kind == "punct" and token.text == ")":
            depth = max(0, depth - 1)
        elif token.kind == "word":
            if len(words) < 4:
                words.append(token.text)
            if body == 0:
                if (
                    token.text == "atomic"
                    and depth == 0
                    and previous is not None
                    and previous.text == "begin"
                    and _creates_routine(words)
                ):
                    body = 1
            elif token.text == "case" and _is_case_expression(
                previous, found_tokens[index + 1] if index + 1 < len(found_tokens) else None
            ):
                body += 1
            elif token.text == "end" and not (
                previous is not None and (previous.text == "." or previous.text == "as")
            ):
                # An END too many only splits more; one missed could hide a statement.
                body -= 1
        previous = token
    if first is not None and last is not None:
        found.append(sql[first.start : last.start + len(last.text)])
    return found


def transaction_control(sql: str) -> list[str]:
    """The statements of ``sql`` that would begin, end or split its transaction."""
    refused = []
    for statement in statements(sql):
        first = next(tokens(statement), None)
        if first is None or first.kind != "word" or first.text not in TRANSACTION_CONTROL:
            continue
        following = [token.text for token in tokens(statement)][1:2]
        if first.text == "prepare" and following != ["transaction"]:
            continue  # PREPARE name AS ...: a prepared statement, not two-phase commit
        refused.append(" ".join(statement.split())[:60])
    return refused
