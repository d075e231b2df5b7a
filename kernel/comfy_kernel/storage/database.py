"""One database for the kernel and its plugins: SQLite (embedded, the default) or PostgreSQL.

Stores describe their tables and statements once, with SQLAlchemy Core
(``Table`` objects, ``select``/``insert``/``update``/``delete``). A
:class:`Database` compiles each statement for its own dialect and runs it
through that database's driver, so a store never writes dialect-specific SQL:

* SQLite: one ``sqlite3`` connection writes on the server's event loop (in
  WAL mode with ``synchronous=NORMAL`` a commit appends to the log without an
  fsync, which costs less than handing the call to a thread), with a busy
  timeout of a few milliseconds; a write that finds the file locked by
  another connection waits for it on a thread instead. Reads, which can be
  large, go through aiosqlite's thread.
* PostgreSQL: an asyncpg connection pool; statements compiled for asyncpg's
  ``$n`` parameters.

Statements kept in module constants (named ``bindparam``\\ s, values given at
each call) are compiled once per dialect; a statement built per call
(literal values, ``IN`` lists) is compiled at each call.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement

log = logging.getLogger(__name__)

LOOP_BUSY_MS = 5
"""How long a write on the server loop may wait for another connection's lock (SQLite)."""

RECONNECT_S = 30.0
"""How long a PostgreSQL statement waits for a dropped server to come back before it fails."""

Row = tuple[Any, ...]
Params = Mapping[str, Any] | None


def is_postgres_url(target: str) -> bool:
    return urlsplit(target).scheme in ("postgresql", "postgres", "postgresql+asyncpg")


def connect(target: str) -> Database:
    """The database ``target`` names: a ``postgresql://`` URL, or a SQLite file (path or ``sqlite:///path``)."""
    if is_postgres_url(target):
        return PostgresDatabase(target)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///"):]
    return SQLiteDatabase(target)


class UnstorableText(ValueError):
    """A text value PostgreSQL cannot hold (a NUL character, or an unpaired surrogate from a JSON body).

    SQLite stores such strings; PostgreSQL refuses them. The server answers a
    request that carried one with 400 (``invalid_text``) instead of failing.
    """


class Reads:
    """``fetch_one`` and ``scalar`` on top of a ``fetch_all``: the same on a database and in a transaction."""

    async def fetch_all(self, stmt: ClauseElement, params: Params = None) -> list[Row]:
        raise NotImplementedError

    async def fetch_one(self, stmt: ClauseElement, params: Params = None) -> Row | None:
        rows = await self.fetch_all(stmt, params)
        return rows[0] if rows else None

    async def scalar(self, stmt: ClauseElement, params: Params = None) -> Any:
        row = await self.fetch_one(stmt, params)
        return row[0] if row else None


class Database(Reads):
    """The shared surface of both back-ends (see the module docstring)."""

    kind: str
    dialect: Dialect

    def __init__(self) -> None:
        self._compiled: dict[int, tuple[ClauseElement, str, tuple[str, ...], dict[str, Any]]] = {}

    # -- lifecycle (back-ends) --
    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """A URL naming the database, without its password (for logs and Alembic)."""
        raise NotImplementedError

    # -- statements --
    def prepare(self, stmt: ClauseElement) -> ClauseElement:
        """Compile ``stmt`` now (a module-level statement run often); returns it."""
        self._compile_cached(stmt)
        return stmt

    def _compile_cached(self, stmt: ClauseElement) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        hit = self._compiled.get(id(stmt))
        if hit is not None and hit[0] is stmt:
            return hit[1], hit[2], hit[3]
        sql, names, defaults = self._compile(stmt)
        self._compiled[id(stmt)] = (stmt, sql, names, defaults)
        return sql, names, defaults

    def _compile(self, stmt: ClauseElement, literal: bool = False) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        kwargs = {"render_postcompile": True} if literal else {}
        compiled = stmt.compile(dialect=self.dialect, compile_kwargs=kwargs)
        names = tuple(compiled.positiontup or ())
        return str(compiled), names, dict(compiled.params)

    def sql(self, stmt: ClauseElement | str, params: Params = None) -> tuple[str, list[Any]]:
        """``stmt`` as this dialect's SQL text and positional arguments."""
        if isinstance(stmt, str):
            return stmt, list((params or {}).values())
        hit = self._compiled.get(id(stmt))
        if hit is not None and hit[0] is stmt:
            sql, names, defaults = hit[1], hit[2], hit[3]
        else:
            sql, names, defaults = self._compile(stmt, literal=True)
        if params:
            args = [params[n] if n in params else defaults[n] for n in names]
        else:
            args = [defaults[n] for n in names]
        for value in args:
            if type(value) is str and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise UnstorableText("text with an unpaired surrogate cannot be stored") from None
        return sql, args

    def storable(self, text: str) -> bool:
        """Whether this database can hold ``text`` (a key that cannot be stored cannot be found either)."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return self.kind != "postgresql" or "\x00" not in text

    # -- running (back-ends) --
    async def execute(self, stmt: ClauseElement, params: Params = None) -> int:
        """Run one writing statement in its own transaction; returns the rows it changed."""
        raise NotImplementedError

    async def execute_many(self, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    async def fetch_all(self, stmt: ClauseElement, params: Params = None) -> list[Row]:
        raise NotImplementedError


    def transaction(self) -> Any:
        """``async with db.transaction() as tx``: ``tx.execute``/``fetch_*``/``scalar`` in one transaction."""
        raise NotImplementedError

    def insert(self, table: Any) -> Any:
        """``INSERT`` for ``table`` with this dialect's ``on_conflict_do_update``/``on_conflict_do_nothing``."""
        if self.kind == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)


class Transaction(Reads):
    """Statements inside :meth:`Database.transaction` (the same calls as on the database)."""

    def __init__(self, db: Database, run: Any, fetch: Any, many: Any):
        self.db, self._run, self._fetch, self._many = db, run, fetch, many

    async def execute(self, stmt: ClauseElement, params: Params = None) -> int:
        sql, args = self.db.sql(stmt, params)
        return await self._run(sql, args)

    async def execute_many(self, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        """``stmt`` once per row (one round trip on PostgreSQL)."""
        if rows:
            batch = [self.db.sql(stmt, row) for row in rows]
            await self._many(batch[0][0], [args for _, args in batch])

    async def fetch_all(self, stmt: ClauseElement, params: Params = None) -> list[Row]:
        sql, args = self.db.sql(stmt, params)
        return await self._fetch(sql, args)



# --- SQLite -----------------------------------------------------------------------------------------


class SQLiteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: str):
        super().__init__()
        from sqlalchemy.dialects.sqlite import pysqlite

        self.path = path
        self.dialect = pysqlite.dialect(paramstyle="qmark")
        self.reader: Any = None  # aiosqlite.Connection
        self.writer: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    async def open(self) -> None:
        import aiosqlite

        self.reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self.reader.execute("PRAGMA journal_mode=WAL")
        await self.reader.execute("PRAGMA synchronous=NORMAL")
        await self.reader.execute("PRAGMA busy_timeout=5000")
        self.writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.writer.execute("PRAGMA synchronous=NORMAL")
        self.writer.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")

    async def close(self) -> None:
        async with self._write_lock:  # a write may be running on a thread: closing under it would crash
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        if self.reader is not None:
            await self.reader.close()
            self.reader = None

    async def write(self, fn: Any) -> Any:
        """Run ``fn(sqlite3 connection)`` under the write lock: on the loop, or on a thread when locked."""
        async with self._write_lock:
            if self.writer is None:
                raise RuntimeError("the database is closed")
            try:
                return fn(self.writer)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            return await asyncio.to_thread(self._patient, fn)

    def _patient(self, fn: Any) -> Any:
        assert self.writer is not None
        self.writer.execute("PRAGMA busy_timeout=5000")
        try:
            return fn(self.writer)
        finally:
            self.writer.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")

    async def execute(self, stmt: ClauseElement, params: Params = None) -> int:
        sql, args = self.sql(stmt, params)
        return await self.write(lambda conn: conn.execute(sql, args).rowcount)

    async def execute_many(self, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        batch = [self.sql(stmt, row) for row in rows]
        sql, rows_args = batch[0][0], [args for _, args in batch]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows_args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self.write(run)

    async def fetch_all(self, stmt: ClauseElement, params: Params = None) -> list[Row]:
        """Rows from the reader connection, read in one call on its thread.

        An ``execute`` and a ``fetchall`` as two calls would leave the statement
        open between them, holding the connection's read snapshot: another
        coroutine's read slipping in would then miss rows committed since.
        """
        sql, args = self.sql(stmt, params)
        return list(await self.reader.execute_fetchall(sql, args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``) on the writer connection, held by the write lock.

        Its statements run on the loop: once the transaction holds the file's
        write lock no other writer can make them wait (WAL readers never do),
        so only ``BEGIN`` may have to wait, on a thread.
        """
        async with self._write_lock:
            conn = self.writer
            if conn is None:
                raise RuntimeError("the database is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                await asyncio.to_thread(self._patient, lambda c: c.execute("BEGIN IMMEDIATE"))

            async def run(sql: str, args: list[Any]) -> int:
                return conn.execute(sql, args).rowcount

            async def fetch(sql: str, args: list[Any]) -> list[Row]:
                return conn.execute(sql, args).fetchall()

            async def many(sql: str, rows: list[list[Any]]) -> None:
                conn.executemany(sql, rows)

            try:
                yield Transaction(self, run, fetch, many)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


# --- PostgreSQL ---------------------------------------------------------------------------------


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8):
        super().__init__()
        from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

        parts = urlsplit(url)
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._redacted = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else
                                        parts.netloc).geturl()
        self.dialect = pg_asyncpg.dialect()
        self.pool: Any = None
        self._sizes = (min_size, max_size)

    @property
    def url(self) -> str:
        return self._redacted

    @property
    def dsn(self) -> str:
        """The URL with its credentials, for drivers."""
        return self._dsn

    def sql(self, stmt: ClauseElement | str, params: Params = None) -> tuple[str, list[Any]]:
        sql, args = super().sql(stmt, params)
        for value in args:
            if type(value) is str and "\x00" in value:
                raise UnstorableText("text with a NUL character cannot be stored")
        return sql, args

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self._dsn, min_size=self._sizes[0], max_size=self._sizes[1])

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _connected(self, fn: Any) -> Any:
        """``fn(connection)`` on a pooled connection; again on a fresh one if the server dropped the old one.

        After PostgreSQL restarts, the pool's idle connections are dead: the
        first statement on each fails before it reaches the server, so running
        it again is safe. While the server is down, this waits up to
        ``RECONNECT_S`` for it to come back.
        """
        import asyncpg

        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                async with self.pool.acquire() as conn:
                    return await fn(conn)
            except (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.CannotConnectNowError,
                    asyncpg.exceptions.InterfaceError, ConnectionError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("database connection lost (%s); retrying", exc)
                await asyncio.sleep(0.2)

    async def execute(self, stmt: ClauseElement, params: Params = None) -> int:
        sql, args = self.sql(stmt, params)

        async def run(conn: Any) -> int:
            return _rowcount(await conn.execute(sql, *args))

        return await self._connected(run)

    async def execute_many(self, stmt: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        batch = [self.sql(stmt, row) for row in rows]

        async def run(conn: Any) -> None:
            await conn.executemany(batch[0][0], [args for _, args in batch])  # one transaction, one round trip

        await self._connected(run)

    async def fetch_all(self, stmt: ClauseElement, params: Params = None) -> list[Row]:
        sql, args = self.sql(stmt, params)

        async def run(conn: Any) -> list[Row]:
            return [tuple(r) for r in await conn.fetch(sql, *args)]

        return await self._connected(run)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction on one pooled connection (taken again if the first one is found dead at ``BEGIN``)."""
        holder: dict[str, Any] = {}

        async def begin(conn: Any) -> None:
            tx = conn.transaction()
            await tx.start()
            holder.update(conn=conn, tx=tx)

        conn = await self._acquire_begun(begin)
        try:
            tx = holder["tx"]

            async def run(sql: str, args: list[Any]) -> int:
                return _rowcount(await conn.execute(sql, *args))

            async def fetch(sql: str, args: list[Any]) -> list[Row]:
                return [tuple(r) for r in await conn.fetch(sql, *args)]

            async def many(sql: str, rows: list[list[Any]]) -> None:
                await conn.executemany(sql, rows)

            try:
                yield Transaction(self, run, fetch, many)
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        finally:
            if conn is not None:
                await self.pool.release(conn)

    async def _acquire_begun(self, begin: Any) -> Any:
        """A connection with a transaction begun, retried while the server reconnects (see ``_connected``)."""
        import asyncpg

        deadline = time.monotonic() + RECONNECT_S
        while True:
            conn = None
            try:
                conn = await self.pool.acquire()
                await begin(conn)
                return conn
            except (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.CannotConnectNowError,
                    asyncpg.exceptions.InterfaceError, ConnectionError, OSError) as exc:
                if conn is not None:
                    await self.pool.release(conn)
                if time.monotonic() > deadline:
                    raise
                log.warning("database connection lost (%s); retrying", exc)
                await asyncio.sleep(0.2)


def _rowcount(status: str) -> int:
    """asyncpg's command tag (``DELETE 3``, ``INSERT 0 1``) -> rows changed."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
