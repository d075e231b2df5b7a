"""Durable queue and history in the kernel's SQLite database (WAL).

Two tables, both keyed by the owner (the identity key of whoever queued the
prompt):

* ``ck_queue``: one row per queued or running prompt. ``attempts`` counts
  how often a worker took it; after a crash (kill -9) the next start puts
  ``running`` rows back to ``pending`` once, and records them as failed if
  they were already retried (the prompt probably crashes the process).
* ``ck_history``: one row per finished prompt, ordered by ``seq``;
  pagination and the size bound run in SQL.

Each state change is one transaction, so a crash at any point leaves a prompt
either in the queue or in history, never both or neither. Sensitive
``extra_data`` keys are never written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import aiosqlite
import orjson

SENSITIVE = ("auth_token_comfy_org", "api_key_comfy_org")
#: How long a write on the server loop may wait for another connection's lock.
LOOP_BUSY_MS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS ck_queue (
    prompt_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    number REAL NOT NULL,
    item BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL
);
CREATE TABLE IF NOT EXISTS ck_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    entry BLOB NOT NULL,
    created REAL,
    started REAL,
    ended REAL,
    outputs_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ck_history_owner ON ck_history(owner, seq);
"""


_ENQUEUE = ("INSERT OR REPLACE INTO ck_queue(prompt_id, owner, number, item, state, attempts, created) "
            "VALUES (?, ?, ?, ?, 'pending', 0, ?)")
_MARK_RUNNING = "UPDATE ck_queue SET state='running', attempts=attempts+1, started=? WHERE prompt_id=?"
_DEQUEUE = "DELETE FROM ck_queue WHERE prompt_id=?"
_INSERT_HISTORY = ("INSERT OR REPLACE INTO ck_history(prompt_id, owner, status, entry, created, started, ended, "
                   "outputs_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def strip_sensitive(extra_data: dict[str, Any]) -> dict[str, Any]:
    if any(k in extra_data for k in SENSITIVE):
        return {k: v for k, v in extra_data.items() if k not in SENSITIVE}
    return extra_data


def public_item(item: list[Any]) -> list[Any]:
    """A queue item as clients see it: sensitive extra_data keys removed."""
    return [item[0], item[1], item[2], strip_sensitive(item[3]), item[4]]


class Store:
    """The queue and history tables.

    Reads (history pages can be large) go through aiosqlite's thread. The three
    small writes every prompt makes (enqueue, mark running, move to history)
    run directly on the server loop through a second connection: in WAL mode
    with ``synchronous=NORMAL`` a commit is an append to the log without an
    fsync, which costs far less than the two thread hand-offs of an aiosqlite
    call, and those writes are most of a trivial prompt's fixed cost.

    The loop never waits on another connection's lock, though: the writer's
    busy timeout is a few milliseconds, and a write that finds the database
    locked (another plugin's long transaction on the shared file) is retried
    on a thread with the usual patience.
    """

    def __init__(self, path: str, history_max_items: int = 10000):
        self.path = path
        self.history_max_items = history_max_items
        self.db: aiosqlite.Connection | None = None
        self.writer: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._history_rows: int | None = None  # rows in ck_history, when known (see _trim)

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self.db.executescript(SCHEMA)
        self.writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.writer.execute("PRAGMA synchronous=NORMAL")
        self.writer.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        """Compile the statements every prompt runs now, in a transaction rolled back, not on the first prompt."""
        assert self.writer is not None
        try:
            self.writer.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # busy: the first prompt compiles them instead
            return
        try:
            self.writer.execute(_ENQUEUE, ("", "", 0.0, b"", 0.0))
            self.writer.execute(_MARK_RUNNING, (0.0, ""))
            self.writer.execute(_DEQUEUE, ("",))
            self.writer.execute(_INSERT_HISTORY, ("", "", "", b"", None, None, None, 0))
        finally:
            self.writer.execute("ROLLBACK")

    async def close(self) -> None:
        # Wait for a write that may be running on a thread: closing the
        # connection under it would crash the interpreter.
        async with self._write_lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        if self.db is not None:
            await self.db.close()
            self.db = None

    # -- queue -----------------------------------------------------------------------------

    async def _write(self, fn: Any) -> None:
        """Run ``fn(writer)`` on the loop; if the database is locked, again on a thread."""
        async with self._write_lock:
            if self.writer is None:
                raise RuntimeError("the queue store is closed")
            try:
                fn(self.writer)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            await asyncio.to_thread(self._patient, fn)

    def _patient(self, fn: Any) -> None:
        assert self.writer is not None
        self.writer.execute("PRAGMA busy_timeout=5000")
        try:
            fn(self.writer)
        finally:
            self.writer.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")

    async def enqueue(self, owner: str, item: list[Any]) -> bytes:
        """Store a queue item; returns its JSON, which :meth:`finish` can reuse for the history row."""
        blob = orjson.dumps(public_item(item), option=orjson.OPT_NON_STR_KEYS)
        now = time.time()
        await self._write(lambda conn: conn.execute(_ENQUEUE, (item[1], owner, float(item[0]), blob, now)))
        return blob

    async def mark_running(self, prompt_id: str) -> None:
        now = time.time()
        await self._write(lambda conn: conn.execute(_MARK_RUNNING, (now, prompt_id)))

    async def delete_pending(self, prompt_ids: list[str] | None, owner: str | None) -> int:
        assert self.db is not None
        if prompt_ids is None:
            sql, args = "DELETE FROM ck_queue WHERE state='pending'", []
        else:
            marks = ",".join("?" * len(prompt_ids))
            sql, args = f"DELETE FROM ck_queue WHERE state='pending' AND prompt_id IN ({marks})", list(prompt_ids)
        if owner is not None:
            sql += " AND owner=?"
            args.append(owner)
        cur = await self.db.execute(sql, args)
        return cur.rowcount

    async def recover(self) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any], float | None]]]:
        """After a restart: (pending rows to run, running rows that died twice → fail)."""
        assert self.db is not None
        requeue, failed = [], []
        async with self.db.execute("SELECT owner, item, state, attempts, started FROM ck_queue "
                                   "ORDER BY number, prompt_id") as cur:
            rows = await cur.fetchall()
        for owner, blob, state, attempts, started in rows:
            item = orjson.loads(blob)
            if state == "running" and attempts >= 2:
                failed.append((owner, item, started))
            else:
                requeue.append((owner, item))
        await self.db.execute("UPDATE ck_queue SET state='pending' WHERE state='running' AND attempts < 2")
        return requeue, failed

    # -- history ---------------------------------------------------------------------------------

    async def finish(self, owner: str, item: list[Any], result: dict[str, Any], started: float | None,
                     ended: float, created: float | None = None, item_blob: bytes | None = None) -> None:
        """Move a prompt from the queue into history in one transaction.

        ``item_blob`` is the item's JSON from :meth:`enqueue`: the prompt (often
        with the whole UI workflow in ``extra_pnginfo``) is not encoded twice.
        """
        assert self.db is not None
        prompt: Any = orjson.Fragment(item_blob) if item_blob is not None else public_item(item)
        entry = {"prompt": prompt, "outputs": result["outputs"], "status": result["status"],
                 "meta": result["meta"]}
        blob = orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
                            default=_json_default)
        count = sum(len(v) for o in result["outputs"].values() if isinstance(o, dict)
                    for v in o.values() if isinstance(v, list))
        keep = self.history_max_items

        def move(conn: Any) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_DEQUEUE, (item[1],))
                cur = conn.execute(_INSERT_HISTORY, (item[1], owner, result["status"]["status_str"], blob, created,
                                                     started, ended, count))
                del cur
                rows = self._trim(conn, keep) if keep > 0 else None
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._history_rows = None
                raise
            self._history_rows = rows

        await self._write(move)

    def _trim(self, conn: Any, keep: int) -> int:
        """Keep the newest ``keep`` history rows; returns how many there are now.

        The row count is tracked, so a prompt pays a COUNT only when the bound
        may be exceeded, and the oldest rows are found from the front of the
        table. (Looking ``keep`` rows back from the newest one on every insert
        cost about 10 ms per prompt with a full 10,000-row history.)
        """
        known = self._history_rows
        if known is not None and known + 1 <= keep:
            return known + 1
        rows = conn.execute("SELECT COUNT(*) FROM ck_history").fetchone()[0]
        if rows > keep:
            conn.execute("DELETE FROM ck_history WHERE seq IN (SELECT seq FROM ck_history ORDER BY seq LIMIT ?)",
                         (rows - keep,))
            rows = keep
        return rows

    async def history(self, owner: str, max_items: int | None, offset: int) -> list[tuple[str, bytes]]:
        assert self.db is not None
        if offset < 0 and max_items is not None:
            async with self.db.execute("SELECT COUNT(*) FROM ck_history WHERE owner=?", (owner,)) as cur:
                total = (await cur.fetchone())[0]
            offset = max(total - max_items, 0)
        offset = max(offset, 0)
        limit = -1 if max_items is None else max_items
        async with self.db.execute("SELECT prompt_id, entry FROM ck_history WHERE owner=? ORDER BY seq "
                                   "LIMIT ? OFFSET ?", (owner, limit, offset)) as cur:
            return list(await cur.fetchall())

    async def history_entry(self, owner: str, prompt_id: str) -> bytes | None:
        assert self.db is not None
        async with self.db.execute("SELECT entry FROM ck_history WHERE owner=? AND prompt_id=?",
                                   (owner, prompt_id)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def history_rows(self, owner: str) -> list[tuple]:
        assert self.db is not None
        async with self.db.execute("SELECT prompt_id, status, entry, created, started, ended, outputs_count "
                                   "FROM ck_history WHERE owner=? ORDER BY seq", (owner,)) as cur:
            return list(await cur.fetchall())

    async def history_record(self, owner: str, prompt_id: str) -> tuple[bytes, float | None, float | None,
                                                                      float | None] | None:
        """One finished prompt's entry with its created, started and ended times (Unix seconds)."""
        assert self.db is not None
        async with self.db.execute("SELECT entry, created, started, ended FROM ck_history WHERE owner=? AND "
                                   "prompt_id=?", (owner, prompt_id)) as cur:
            row = await cur.fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    async def delete_history(self, owner: str, prompt_ids: list[str] | None) -> None:
        assert self.db is not None
        self._history_rows = None
        if prompt_ids is None:
            await self.db.execute("DELETE FROM ck_history WHERE owner=?", (owner,))
        else:
            for pid in prompt_ids:
                await self.db.execute("DELETE FROM ck_history WHERE owner=? AND prompt_id=?", (owner, pid))
        self._history_rows = None


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
