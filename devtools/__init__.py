"""Development infrastructure: private PostgreSQL, PgBouncer and live servers.

Used by ``./run.sh`` (``python -m devtools``), the tests and the benchmark harness;
never by the service itself, so it is not part of the wheel.

- ``devtools.postgres``: a throw-away cluster for tests and benchmarks, and the
  private cluster ``./run.sh`` serves with.
- ``devtools.pgbouncer``: a real PgBouncer in transaction mode in front of one.
- ``devtools.liveserver``: a real ``todo-server serve`` (or any server) on a free port.
"""
