"""Statements run as a user for row-level security, in one round trip.

The policies (sql/0009) show a statement only the rows of the user named by the
transaction-local setting ``app.user_id``. While a connection's ``acting_user``
is set (``acting_as``; ``storage.user_slots.connection_for`` does it for each task
request), every statement goes out in one libpq pipeline right behind
``set_config('app.user_id', <user>, true)``: both run in the same transaction
(an explicit one, or the implicit one that ends at the pipeline's Sync), so the
setting never outlives it or reaches another request, even through PgBouncer's
transaction pooling.

Why not psycopg's own ``conn.pipeline()``: it is general (any number of
statements, cursors, nesting) and pays for it in client CPU on every request,
enough to cost the service a visible share of its throughput. This path sends
the two statements, a Sync and one flush, then reads the three results, which
costs less than psycopg's cursor path for the query alone (bench/README.md has
the numbers). It handles only what the service's statements need: named or
positional ``%s`` parameters, one result, rows read as dicts with
``fetchone``/``fetchall``; everything else uses psycopg as usual.

So ``execute`` answers a ``Rows`` while a user is acting and psycopg's cursor
otherwise (``StatementResult``): code that runs as a user reads a result only
through ``fetchone``, ``fetchall`` and ``rowcount``, which both provide.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.rows import DictRow

#: Sent before every statement run for a user: row-level security's key.
SET_USER_SQL = b"SELECT set_config('app.user_id', $1, true)"
SET_USER_KEY = (SET_USER_SQL, ())

#: Statements counted and prepared per connection at most; beyond, they run unprepared.
MAX_PREPARED = 100

_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]+)\))?(?P<kind>[s%])")


class Rows:
    """What a statement run as a user answered: its rows, as dicts, and its row count."""

    def __init__(self, rows: list[DictRow], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    async def fetchone(self) -> DictRow | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[DictRow]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows


#: What ``UserConnection.execute`` answers: ``Rows`` while a user is acting, else
#: psycopg's cursor.
StatementResult: TypeAlias = psycopg.AsyncCursor[DictRow] | Rows


class _Statement:
    """A query converted once to PostgreSQL's ``$n`` form, with its parameters' order."""

    __slots__ = ("text", "names")

    def __init__(self, query: str) -> None:
        names: list[str | int] = []
        numbers: dict[str, int] = {}
        position = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal position
            if match["kind"] == "%":
                return "%"
            name = match["name"]
            if name is None:
                names.append(position)
                position += 1
                return f"${len(names)}"
            if name not in numbers:
                names.append(name)
                numbers[name] = len(names)
            return f"${numbers[name]}"

        self.text = _PLACEHOLDER.sub(replace, query).encode()
        self.names = names

    def values(self, params: Mapping[Any, Any] | Sequence[Any] | None) -> list[Any]:
        if params is None:
            params = ()
        if isinstance(params, Mapping):
            return [params[name] for name in self.names]
        if len(params) != len(self.names):
            raise psycopg.ProgrammingError(
                f"the query has {len(self.names)} placeholders but {len(params)} parameters"
            )
        return list(params)


@functools.lru_cache(maxsize=1024)  # list queries vary with filters: keep it bounded
def _statement(query: str) -> _Statement:
    """``query`` converted, once per text."""
    return _Statement(query)


class UserConnection(psycopg.AsyncConnection[DictRow]):
    """A connection that runs each statement as ``acting_user`` (see the module's docstring)."""

    acting_user: str | None = None

    #: Prepare a statement run for users from its this-many-th run (0: at once);
    #: None never prepares (behind a transaction-pooling PgBouncer). psycopg's
    #: own ``prepare_threshold`` must stay None on these connections: psycopg
    #: answers a ROLLBACK after statements it prepared with DEALLOCATE ALL,
    #: which would drop these too.
    user_prepare_threshold: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (statement text, parameter types) -> the name it was prepared under
        self._prepared_for_users: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._runs: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self._names_made = 0  # names are never reused: a dropped cache may outlive its server side

    def _new_name(self) -> bytes:
        self._names_made += 1
        return f"todo_{self._names_made}".encode()

    # The override answers Rows, not a cursor, while a user is acting: callers
    # that run as a user take a UserConnection and read a StatementResult.
    async def execute(  # type: ignore[override]
        self, query: Any, params: Any = None, **kwargs: Any
    ) -> StatementResult:
        if self.acting_user is None or kwargs or not isinstance(query, str):
            return await super().execute(query, params, **kwargs)
        async with self.lock:
            return await self._execute_as_user(self.acting_user, _statement(query), params)

    async def _execute_as_user(self, user_id: str, statement: _Statement, params: Any) -> Rows:
        tx = Transformer(self)
        values = statement.values(params)
        dumped = tx.dump_sequence(values, [PyFormat.AUTO] * len(values))
        # dump_sequence sets both, for the values it dumped.
        assert tx.types is not None and tx.formats is not None
        types = tuple(tx.types)
        formats = list(tx.formats)
        pgconn = self.pgconn
        encoding = self.info.encoding
        threshold = self.user_prepare_threshold
        prepare = threshold is not None
        key = (statement.text, types)
        name = self._prepared_for_users.get(key) if prepare else None
        new_name = None
        counted = key in self._runs or len(self._runs) < MAX_PREPARED
        if name is None and threshold is not None and counted:
            runs = self._runs[key] = self._runs.get(key, 0) + 1
            if runs > threshold:
                new_name = self._new_name()
        set_user = self._prepared_for_users.get(SET_USER_KEY) if prepare else None
        new_set_user = self._new_name() if prepare and set_user is None else None

        pgconn.enter_pipeline_mode()
        try:
            # The results to read back, in the order they come.
            expected: list[str] = []
            user = [user_id.encode(encoding)]
            if new_set_user is not None:
                pgconn.send_prepare(new_set_user, SET_USER_SQL)
                expected.append("prepare-set")
                set_user = new_set_user
            if set_user is not None:
                pgconn.send_query_prepared(set_user, user)
            else:
                pgconn.send_query_params(SET_USER_SQL, user)
            expected.append("set")
            if new_name is not None:
                pgconn.send_prepare(new_name, statement.text, param_types=types)
                expected.append("prepare")
                name = new_name
            if name is not None:
                pgconn.send_query_prepared(name, dumped, param_formats=formats)
            else:
                pgconn.send_query_params(
                    statement.text, dumped, param_types=types, param_formats=formats
                )
            expected.append("main")
            pgconn.pipeline_sync()
            # One wait for the whole exchange: every generator step in between
            # would otherwise be a trip through psycopg's waiting machinery.
            batches, sync = await self.wait(_exchange(pgconn, len(expected)))

            error: pq.abc.PGresult | None = None
            main: pq.abc.PGresult | None = None
            for what, batch in zip(expected, batches, strict=True):
                for result in batch:
                    if result.status == pq.ExecStatus.FATAL_ERROR:
                        error = error or result
                    elif result.status == pq.ExecStatus.PIPELINE_ABORTED:
                        pass
                    elif what == "prepare-set" and new_set_user is not None:
                        self._prepared_for_users[SET_USER_KEY] = new_set_user
                    elif what == "prepare" and new_name is not None:
                        self._prepared_for_users[key] = new_name
                    elif what == "main":
                        main = result
            if sync is None or sync.status != pq.ExecStatus.PIPELINE_SYNC:
                raise psycopg.OperationalError("the pipeline ended without its Sync")
            pgconn.exit_pipeline_mode()
        except BaseException:
            # Results may be left unread (a lost connection, a cancelled request):
            # the connection's state is unknown, so it must not be used again.
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                pgconn.finish()
            raise

        if error is not None:
            exc = pg_errors.error_from_result(error, encoding=encoding)
            if isinstance(exc, pg_errors.InvalidSqlStatementName):
                # Dropped under us (DEALLOCATE ALL, or a pooler mixing sessions):
                # start afresh, so the next statement prepares again.
                self._prepared_for_users.clear()
                self._runs.clear()
            raise exc
        assert main is not None
        rows: list[DictRow] = []
        if main.status == pq.ExecStatus.TUPLES_OK and main.ntuples:
            tx.set_pgresult(main)
            names = [(main.fname(i) or b"").decode(encoding) for i in range(main.nfields)]
            rows = tx.load_rows(
                0, main.ntuples, lambda values: dict(zip(names, values, strict=True))
            )
        return Rows(rows, main.command_tuples or 0)


def _exchange(pgconn: pq.abc.PGconn, statements: int) -> Any:
    """Send what is queued, then read each statement's results and the Sync.

    A psycopg generator (``connection.wait`` runs it): it yields whenever it
    must wait for the socket.
    """
    yield from generators.send(pgconn)
    batches = []
    for _ in range(statements):
        batches.append((yield from generators.fetch_many(pgconn)))
    sync = yield from generators.fetch(pgconn)
    return batches, sync


@asynccontextmanager
async def acting_as(conn: UserConnection, user_id: str) -> AsyncIterator[None]:
    """Run ``conn``'s statements in the block as ``user_id`` (see ``UserConnection``)."""
    assert isinstance(conn, UserConnection)  # any other connection would not act as the user
    conn.acting_user = user_id
    try:
        yield
    finally:
        conn.acting_user = None
