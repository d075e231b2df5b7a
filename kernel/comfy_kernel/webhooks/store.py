"""Webhook state in the kernel's SQLite database, so nothing is lost or sent twice across restarts.

* ``ck_webhook_endpoints``: webhooks an owner registered (URL, events, secret).
* ``ck_webhook_secrets``: each owner's signing secret for the webhooks named
  in a prompt's ``extra_data.webhook``.
* ``ck_webhook_jobs``: which targets a queued job notifies (resolved when it
  is queued) and whether its final event has been queued for delivery.
* ``ck_webhook_deliveries``: the outbox. One row per (job, event, target),
  its id derived from those, so recording an event twice is harmless; a
  row is ``pending`` until delivered or given up (``failed``).
* ``ck_webhook_attempts``: every attempt's time, status and error: the
  delivery log of a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS ck_webhook_endpoints (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ck_webhook_endpoints_owner ON ck_webhook_endpoints(owner);
CREATE TABLE IF NOT EXISTS ck_webhook_secrets (
    owner TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ck_webhook_jobs (
    prompt_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    targets TEXT NOT NULL,
    base_url TEXT NOT NULL,
    final_queued INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ck_webhook_deliveries (
    id TEXT PRIMARY KEY,
    prompt_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    endpoint_id TEXT,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS ck_webhook_deliveries_due ON ck_webhook_deliveries(state, next_attempt);
CREATE INDEX IF NOT EXISTS ck_webhook_deliveries_job ON ck_webhook_deliveries(prompt_id);
CREATE TABLE IF NOT EXISTS ck_webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
"""

ENDPOINT_FIELDS = "id, owner, url, events, secret, description, enabled, created, updated"
DELIVERY_FIELDS = ("id, prompt_id, owner, event, url, endpoint_id, payload, state, attempts, next_attempt, "
                   "last_status, last_error, created, delivered_at")


def _endpoint(row: Any) -> dict[str, Any]:
    keys = ENDPOINT_FIELDS.split(", ")
    out = dict(zip(keys, row, strict=True))
    out["events"] = orjson.loads(out["events"])
    out["enabled"] = bool(out["enabled"])
    return out


def _delivery(row: Any) -> dict[str, Any]:
    return dict(zip(DELIVERY_FIELDS.split(", "), row, strict=True))


class WebhookStore:
    """The tables above on one aiosqlite connection; one statement or transaction at a time."""

    def __init__(self, path: str):
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self.db.executescript(SCHEMA)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction at a time on the shared connection (coroutines would interleave otherwise)."""
        assert self.db is not None
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _exec(self, sql: str, args: tuple = ()) -> None:
        assert self.db is not None
        async with self._lock:
            await self.db.execute(sql, args)

    async def _all(self, sql: str, args: tuple = ()) -> list[Any]:
        # Under the lock too: a read still stepping when another coroutine
        # begins a write would make SQLite refuse that write at once (a read
        # cannot wait to become a write) instead of waiting for the lock.
        assert self.db is not None
        async with self._lock, self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, args: tuple = ()) -> Any:
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    # -- endpoints ---------------------------------------------------------------------------------

    async def endpoints(self, owner: str) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {ENDPOINT_FIELDS} FROM ck_webhook_endpoints WHERE owner=? ORDER BY created",
                               (owner,))
        return [_endpoint(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        row = await self._one(f"SELECT {ENDPOINT_FIELDS} FROM ck_webhook_endpoints WHERE id=?", (endpoint_id,))
        return _endpoint(row) if row else None

    async def owners_with_endpoints(self) -> set[str]:
        return {r[0] for r in await self._all("SELECT DISTINCT owner FROM ck_webhook_endpoints WHERE enabled=1")}

    async def add_endpoint(self, record: dict[str, Any]) -> None:
        await self._exec(
            f"INSERT INTO ck_webhook_endpoints({ENDPOINT_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record["id"], record["owner"], record["url"], orjson.dumps(record["events"]), record["secret"],
             record["description"], int(record["enabled"]), record["created"], record["updated"]))

    async def update_endpoint(self, endpoint_id: str, fields: dict[str, Any]) -> None:
        values = {k: (orjson.dumps(v) if k == "events" else int(v) if k == "enabled" else v)
                  for k, v in fields.items()}
        values["updated"] = time.time()
        assignments = ", ".join(f"{k}=?" for k in values)
        await self._exec(f"UPDATE ck_webhook_endpoints SET {assignments} WHERE id=?", (*values.values(), endpoint_id))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self._exec("DELETE FROM ck_webhook_endpoints WHERE id=?", (endpoint_id,))

    # -- owner secrets -----------------------------------------------------------------------------

    async def owner_secret(self, owner: str, make: Any) -> str:
        """The owner's signing secret, created with ``make()`` on first use."""
        row = await self._one("SELECT secret FROM ck_webhook_secrets WHERE owner=?", (owner,))
        if row:
            return str(row[0])
        await self._exec("INSERT OR IGNORE INTO ck_webhook_secrets(owner, secret, created) VALUES (?, ?, ?)",
                         (owner, make(), time.time()))
        row = await self._one("SELECT secret FROM ck_webhook_secrets WHERE owner=?", (owner,))
        return str(row[0])

    async def set_owner_secret(self, owner: str, secret: str) -> None:
        await self._exec("INSERT OR REPLACE INTO ck_webhook_secrets(owner, secret, created) VALUES (?, ?, ?)",
                         (owner, secret, time.time()))

    # -- jobs --------------------------------------------------------------------------------------

    async def track(self, prompt_id: str, owner: str, targets: list[dict[str, Any]], base_url: str) -> None:
        await self._exec(
            "INSERT OR REPLACE INTO ck_webhook_jobs(prompt_id, owner, targets, base_url, final_queued, created) "
            "VALUES (?, ?, ?, ?, 0, ?)", (prompt_id, owner, orjson.dumps(targets), base_url, time.time()))

    async def tracked(self, only_open: bool = True) -> list[dict[str, Any]]:
        sql = "SELECT prompt_id, owner, targets, base_url, final_queued FROM ck_webhook_jobs"
        if only_open:
            sql += " WHERE final_queued=0"
        rows = await self._all(sql)
        return [{"prompt_id": r[0], "owner": r[1], "targets": orjson.loads(r[2]), "base_url": r[3],
                 "final_queued": bool(r[4])} for r in rows]

    async def job_owner(self, prompt_id: str) -> str | None:
        row = await self._one("SELECT owner FROM ck_webhook_jobs WHERE prompt_id=?", (prompt_id,))
        return str(row[0]) if row else None

    # -- deliveries --------------------------------------------------------------------------------

    async def add_deliveries(self, rows: list[dict[str, Any]], final_of: str | None = None) -> None:
        """Queue deliveries (ignoring ids already queued); with ``final_of``, mark that job's final event done."""
        assert self.db is not None
        now = time.time()
        async with self.transaction() as db:
            for row in rows:
                await db.execute(
                    "INSERT OR IGNORE INTO ck_webhook_deliveries(id, prompt_id, owner, event, url, endpoint_id, "
                    "payload, state, attempts, next_attempt, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                    (row["id"], row["prompt_id"], row["owner"], row["event"], row["url"], row.get("endpoint_id"),
                     row["payload"], now, now))
            if final_of is not None:
                await db.execute("UPDATE ck_webhook_jobs SET final_queued=1 WHERE prompt_id=?", (final_of,))

    async def due(self, now: float, exclude: set[str], limit: int) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {DELIVERY_FIELDS} FROM ck_webhook_deliveries WHERE state='pending' "
                               "AND next_attempt<=? ORDER BY next_attempt LIMIT ?", (now, limit + len(exclude)))
        return [d for d in map(_delivery, rows) if d["id"] not in exclude][:limit]

    async def next_due(self, exclude: set[str]) -> float | None:
        """When the next pending delivery not in ``exclude`` (those in flight) is due."""
        marks = ",".join("?" * len(exclude))
        sql = "SELECT MIN(next_attempt) FROM ck_webhook_deliveries WHERE state='pending'"
        if exclude:
            sql += f" AND id NOT IN ({marks})"
        row = await self._one(sql, tuple(exclude))
        return float(row[0]) if row and row[0] is not None else None

    async def still_due(self, delivery: dict[str, Any]) -> bool:
        """Whether ``delivery`` (as read earlier) is still pending with the same attempt count.

        The delivery loop reads due rows while attempts may be finishing: a
        row read just before its attempt was recorded must not be sent again.
        """
        row = await self._one("SELECT state, attempts FROM ck_webhook_deliveries WHERE id=?", (delivery["id"],))
        return row is not None and row[0] == "pending" and row[1] == delivery["attempts"]

    async def prune(self, before: float) -> None:
        """Forget finished deliveries and jobs older than ``before``."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM ck_webhook_attempts WHERE delivery_id IN (SELECT id FROM "
                             "ck_webhook_deliveries WHERE state!='pending' AND created<?)", (before,))
            await db.execute("DELETE FROM ck_webhook_deliveries WHERE state!='pending' AND created<?", (before,))
            await db.execute("DELETE FROM ck_webhook_jobs WHERE final_queued=1 AND created<?", (before,))

    async def record_attempt(self, delivery: dict[str, Any], outcome: Any, state: str,
                             next_attempt: float) -> None:
        """Write one attempt and the delivery's new state in one transaction."""
        assert self.db is not None
        attempt = delivery["attempts"] + 1
        now = time.time()
        async with self.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO ck_webhook_attempts(delivery_id, attempt, at, status, error, duration_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)", (delivery["id"], attempt, now, outcome.status, outcome.error,
                                              outcome.duration_ms))
            await db.execute(
                "UPDATE ck_webhook_deliveries SET state=?, attempts=?, next_attempt=?, last_status=?, "
                "last_error=?, delivered_at=? WHERE id=?",
                (state, attempt, next_attempt, outcome.status, outcome.error,
                 now if state == "delivered" else None, delivery["id"]))

    async def job_deliveries(self, prompt_id: str, owner: str) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {DELIVERY_FIELDS} FROM ck_webhook_deliveries WHERE prompt_id=? AND owner=? "
                               "ORDER BY created, id", (prompt_id, owner))
        deliveries = [_delivery(r) for r in rows]
        for d in deliveries:
            attempts = await self._all("SELECT attempt, at, status, error, duration_ms FROM ck_webhook_attempts "
                                       "WHERE delivery_id=? ORDER BY attempt", (d["id"],))
            d["log"] = [{"attempt": a[0], "at": a[1], "status": a[2], "error": a[3], "duration_ms": a[4]}
                        for a in attempts]
        return deliveries
