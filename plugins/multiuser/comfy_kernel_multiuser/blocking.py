"""Reads for the hooks the kernel calls synchronously: who is calling, may a node open a file, a prompt's secrets.

``ck_resolve_identity``, ``ck_file_access`` and ``ck_on_prompt`` must answer
before they return, so their lookups cannot await ``kernel.database``. They
run the same SQLAlchemy Core statements through a connection of their own:

* SQLite: a DB-API connection to the same file, running each statement as
  ``kernel.database`` compiles it. In WAL mode it sees every committed write
  and never waits for a writer; a point lookup takes microseconds, less than
  handing it to a thread would.
* PostgreSQL: a small asyncpg pool on a thread with its own event loop; the
  caller waits for the round trip (a few hundred microseconds on a local
  network), at most ``TIMEOUT_S``.

``ck_file_access`` may be called from a worker thread, so both are thread-safe.
Statements that run on every request or prompt are marked :func:`hot`: each
is compiled once, on its first use, instead of at every call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy.sql import ClauseElement

from comfy_kernel.storage import Database, connect

TIMEOUT_S = 10.0
"""How long a lookup waits for PostgreSQL before the request fails (closed: no identity, no access)."""

Row = tuple[Any, ...]

HOT: dict[int, ClauseElement] = {}
"""Statements run on every request or prompt (see :func:`hot`)."""


def hot(stmt: Any) -> Any:
    """Mark a module-level statement (named ``bindparam``\\ s) to be compiled once, on its first use."""
    HOT[id(stmt)] = stmt
    return stmt


class BlockingReads:
    """Synchronous ``fetch_one``/``fetch_all`` on the database ``db`` names (see the module docstring)."""

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._engine: Any = None
        self._conn: Any = None  # SQLite: a DB-API connection
        self._loop: asyncio.AbstractEventLoop | None = None  # PostgreSQL: the pool's loop and thread
        self._thread: threading.Thread | None = None
        self._pool_db: Database | None = None
        self._prepared: dict[int, ClauseElement] = {}

    async def open(self) -> None:
        if self.db.kind == "sqlite":
            from sqlalchemy import create_engine

            # isolation_level=None: autocommit, so no read keeps an old snapshot open.
            self._engine = create_engine(self.db.url, connect_args={
                "check_same_thread": False, "isolation_level": None, "timeout": 10})
            self._conn = await asyncio.to_thread(self._engine.raw_connection)
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="multiuser-reads", daemon=True)
        thread.start()
        pool_db = connect(getattr(self.db, "dsn", self.db.url))
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool_db.open(), loop))
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread, self._pool_db = loop, thread, pool_db
        for stmt in self._prepared.values():
            pool_db.prepare(stmt)

    async def close(self) -> None:
        if self._conn is not None:
            with self._lock:
                self._conn.close()
                self._conn = None
            self._engine.dispose()
            self._engine = None
        loop, pool_db = self._loop, self._pool_db
        if loop is not None and pool_db is not None:
            self._loop = self._pool_db = None
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool_db.close(), loop))
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join)
                self._thread = None
            loop.close()

    def ready(self, stmt: ClauseElement) -> ClauseElement:
        """``stmt``, compiled once for both connections if it is :func:`hot` (see ``Database.prepare``)."""
        if id(stmt) in HOT and id(stmt) not in self._prepared:
            self.db.prepare(stmt)
            self._prepared[id(stmt)] = stmt
            if self._pool_db is not None:
                self._pool_db.prepare(stmt)
        return stmt

    def fetch_all(self, stmt: ClauseElement, params: Mapping[str, Any] | None = None) -> list[Row]:
        self.ready(stmt)
        if self.db.kind == "sqlite":
            sql, args = self.db.sql(stmt, params)
            with self._lock:
                if self._conn is None:
                    raise RuntimeError("the multiuser store is closed")
                cursor = self._conn.cursor()
                try:
                    return [tuple(r) for r in cursor.execute(sql, args).fetchall()]
                finally:
                    cursor.close()
        loop, pool_db = self._loop, self._pool_db
        if loop is None or pool_db is None:
            raise RuntimeError("the multiuser store is closed")
        return asyncio.run_coroutine_threadsafe(pool_db.fetch_all(stmt, params), loop).result(TIMEOUT_S)

    def fetch_one(self, stmt: ClauseElement, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = self.fetch_all(stmt, params)
        return rows[0] if rows else None
