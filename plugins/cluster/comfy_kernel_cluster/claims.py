"""Who runs a prompt now: a lease per prompt, next to the kernel's queue table.

JetStream redelivers a message whose worker stopped acknowledging it, but it
cannot tell a dead worker from one that lost NATS for a while; the lease can.
A worker takes a prompt only when no other worker renewed its lease within
``lease`` seconds, and it takes it in the same transaction that marks the
queue row running (``attempts + 1``), so the single-process rule carries
over: a prompt whose worker died while running it twice is recorded as
failed instead of being run a third time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS ck_cluster_claims (
    prompt_id TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    beat REAL NOT NULL
);
"""

RUN, GONE, HELD, DEAD_TWICE = "run", "gone", "held", "dead-twice"


class Claims:
    def __init__(self, path: str, worker_id: str, lease: float):
        self.path = path
        self.worker_id = worker_id
        self.lease = lease
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            return conn

        self._conn = await asyncio.to_thread(connect)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            if self._conn is None:
                raise RuntimeError("the claims table is closed")
            return await asyncio.to_thread(fn, self._conn, *args)

    async def claim(self, prompt_id: str) -> tuple[str, dict[str, Any] | None]:
        """Try to take ``prompt_id``: (RUN, row), or GONE / HELD / DEAD_TWICE with the row if any."""
        return await self._call(self._claim, prompt_id, time.time())

    def _claim(self, conn: sqlite3.Connection, prompt_id: str, now: float) -> tuple[str, dict[str, Any] | None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT owner, item, state, attempts, created, started FROM ck_queue "
                               "WHERE prompt_id=?", (prompt_id,)).fetchone()
            if row is None:
                conn.execute("DELETE FROM ck_cluster_claims WHERE prompt_id=?", (prompt_id,))
                conn.execute("COMMIT")
                return GONE, None
            owner, blob, state, attempts, created, started = row
            info = {"owner": owner, "item": orjson.loads(blob), "state": state, "attempts": attempts,
                    "created": created, "started": started}
            held = conn.execute("SELECT worker, beat FROM ck_cluster_claims WHERE prompt_id=?",
                                (prompt_id,)).fetchone()
            if held is not None and held[0] != self.worker_id and now - held[1] < self.lease:
                conn.execute("COMMIT")
                return HELD, info
            if state == "running" and attempts >= 2:
                conn.execute("COMMIT")
                return DEAD_TWICE, info
            conn.execute("UPDATE ck_queue SET state='running', attempts=attempts+1, started=? WHERE prompt_id=?",
                         (now, prompt_id))
            conn.execute("INSERT OR REPLACE INTO ck_cluster_claims(prompt_id, worker, beat) VALUES (?, ?, ?)",
                         (prompt_id, self.worker_id, now))
            conn.execute("COMMIT")
            info["started"] = now
            return RUN, info
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def renew(self, prompt_id: str) -> None:
        await self._call(lambda conn: conn.execute(
            "UPDATE ck_cluster_claims SET beat=? WHERE prompt_id=? AND worker=?",
            (time.time(), prompt_id, self.worker_id)))

    async def release(self, prompt_id: str) -> None:
        await self._call(lambda conn: conn.execute(
            "DELETE FROM ck_cluster_claims WHERE prompt_id=? AND worker=?", (prompt_id, self.worker_id)))

    async def queue_rows(self) -> list[tuple[str, bytes, str, float]]:
        """Every queue row (owner, item, state, created), in queue order: what the front-ends show."""
        return await self._call(lambda conn: conn.execute(
            "SELECT owner, item, state, created FROM ck_queue ORDER BY number, prompt_id").fetchall())

    async def stale(self) -> list[tuple[str, bytes]]:
        """Rows no worker holds: pending ones, and running ones whose lease ran out (to publish again)."""
        def select(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            now = time.time()
            return conn.execute(
                "SELECT q.owner, q.item FROM ck_queue q LEFT JOIN ck_cluster_claims c ON c.prompt_id=q.prompt_id "
                "WHERE q.state='pending' OR c.beat IS NULL OR c.beat < ? ORDER BY q.number, q.prompt_id",
                (now - self.lease,)).fetchall()
        return await self._call(select)
