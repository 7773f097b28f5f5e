"""PostgreSQL through psycopg 3: the Database port of the PostgreSQL sink (connectors/sinks/postgres.py) and the
SourceDatabase port of the PostgreSQL source (connectors/sources/postgres.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg

from broker.errors import ConfigError, ServiceError


class PostgresDatabase:
    """One connection; every `apply` is one transaction, retried by the caller after a ServiceError."""

    def __init__(self, dsn: str, password: str | None = None, application_name: str = "accord-sink") -> None:
        self._dsn, self._password, self._name = dsn, password, application_name
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            extra: dict[str, Any] = {"application_name": self._name}
            if self._password is not None:
                extra["password"] = self._password
            try:
                self._conn = psycopg.connect(self._dsn, **extra)
            except psycopg.Error as exc:
                raise ServiceError(f"cannot connect to PostgreSQL at {_shown(self._dsn)}: {exc}") from exc
        return self._conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql.encode(), params)  # built from quoted identifiers
                return cur.fetchall()
        except psycopg.Error as exc:
            raise ServiceError(f"PostgreSQL query failed: {exc}") from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of one statement (the PostgreSQL source's SourceDatabase port)."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql.encode(), params)  # built from quoted identifiers and the config's own query
                names = [c.name for c in cur.description or ()]
                return names, cur.fetchall()
        except (psycopg.ProgrammingError, psycopg.DataError) as exc:
            raise ConfigError(f"PostgreSQL refused the source's query ({exc}); check its table, query and "
                              "columns") from exc
        except psycopg.Error as exc:
            raise ServiceError(f"PostgreSQL query failed: {exc}") from exc

    def apply(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                for sql, rows in statements:
                    if rows:
                        cur.executemany(sql.encode(), rows)
        except psycopg.Error as exc:
            raise ServiceError(f"PostgreSQL write failed (nothing of it was stored): {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _shown(dsn: str) -> str:
    """The DSN without a password it may carry after the user name."""
    return re.sub(r"://([^:@/]+):[^@]*@", r"://\1@", dsn)
