"""The hub's tables in the kernel's embedded SQLite database.

Every table is prefixed ``hub_`` because the database file is shared with the
kernel and other plugins. One aiosqlite connection serves the whole plugin;
``HubStore.transaction`` serialises read-modify-write sequences on it with an
asyncio lock *and* ``BEGIN IMMEDIATE``, so that two requests (or two server
processes on the same file) can never both append "version N+1".

Workflow versions and published snapshots are insert-only: no statement in
this module updates or deletes a row of ``hub_versions`` or
``hub_snapshots``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_workflows (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_by TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    default_view TEXT NOT NULL DEFAULT 'workflow',
    latest_version INTEGER NOT NULL,
    forked_from_workflow_id TEXT,
    forked_from_version_id TEXT,
    source_file TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS hub_workflows_owner ON hub_workflows(owner, deleted_at);
CREATE UNIQUE INDEX IF NOT EXISTS hub_workflows_file ON hub_workflows(owner, source_file)
    WHERE source_file IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS hub_versions (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES hub_workflows(id),
    version INTEGER NOT NULL,
    workflow_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (workflow_id, version)
);

CREATE TABLE IF NOT EXISTS hub_shares (
    share_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    listed INTEGER NOT NULL DEFAULT 0,
    profile_username TEXT,
    status TEXT NOT NULL DEFAULT 'approved',
    hub_fields TEXT NOT NULL DEFAULT '{}',
    unpublished_at REAL
);

CREATE TABLE IF NOT EXISTS hub_snapshots (
    id TEXT PRIMARY KEY,
    share_id TEXT NOT NULL REFERENCES hub_shares(share_id),
    seq INTEGER NOT NULL,
    version_id TEXT NOT NULL,
    name TEXT NOT NULL,
    workflow_json TEXT NOT NULL,
    assets TEXT NOT NULL,
    publish_time REAL NOT NULL,
    UNIQUE (share_id, seq)
);

CREATE TABLE IF NOT EXISTS hub_profiles (
    username TEXT PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description TEXT,
    avatar_url TEXT,
    website_urls TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS hub_labels (
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT,
    PRIMARY KEY (type, name)
);

CREATE TABLE IF NOT EXISTS hub_uploads (
    token TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    stored_name TEXT NOT NULL,
    expires_at REAL NOT NULL,
    uploaded_at REAL,
    claimed_at REAL
);

CREATE TABLE IF NOT EXISTS hub_feedback (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT,
    rating INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
"""


class VersionConflict(Exception):
    """``base_version`` is not the workflow's latest version."""

    def __init__(self, current: int):
        super().__init__(f"base_version is stale: the current version is {current}")
        self.current = current


def new_id() -> str:
    return str(uuid.uuid4())


def new_share_id() -> str:
    """Short, URL-safe and unguessable: a share id is a capability for unlisted shares."""
    return secrets.token_urlsafe(12)


def dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def load(text: str | None, default: Any = None) -> Any:
    return orjson.loads(text) if text else default


class HubStore:
    """All database access of the plugin."""

    def __init__(self, path: str, content_dir: str = ""):
        self.path = path
        #: Where copies of published private asset content live (see ``publishing.keep_content``).
        self.content_dir = content_dir
        self.db: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        self.db = await aiosqlite.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = aiosqlite.Row
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA busy_timeout=30000")
        await self.db.executescript(SCHEMA)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time, taken before any read it depends on."""
        assert self.db is not None, "hub store is not open"
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            else:
                await self.db.execute("COMMIT")

    async def one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        async with self.db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return dict(row) if row else None

    async def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self.db.execute(sql, params) as cur:
            return [dict(r) for r in await cur.fetchall()]

    # --- workflows and versions --------------------------------------------

    async def create_workflow(self, *, owner: str, created_by: str, name: str, description: str,
                              default_view: str, workflow_json: dict[str, Any],
                              forked_from: tuple[str, str] | None = None,
                              source_file: str | None = None) -> dict[str, Any]:
        now = time.time()
        wf_id, version_id = new_id(), new_id()
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO hub_workflows (id, owner, created_by, name, description, default_view, latest_version,"
                " forked_from_workflow_id, forked_from_version_id, source_file, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (wf_id, owner, created_by, name, description, default_view,
                 forked_from[0] if forked_from else None, forked_from[1] if forked_from else None,
                 source_file, now, now))
            await db.execute(
                "INSERT INTO hub_versions (id, workflow_id, version, workflow_json, created_by, created_at)"
                " VALUES (?, ?, 1, ?, ?, ?)", (version_id, wf_id, dump(workflow_json), created_by, now))
        return await self.get_workflow(wf_id)

    async def get_workflow(self, wf_id: str) -> dict[str, Any] | None:
        return await self.one("SELECT * FROM hub_workflows WHERE id = ? AND deleted_at IS NULL", (wf_id,))

    async def workflow_for_file(self, owner: str, source_file: str) -> dict[str, Any] | None:
        return await self.one("SELECT * FROM hub_workflows WHERE owner = ? AND source_file = ? AND deleted_at IS NULL",
                              (owner, source_file))

    async def list_workflows(self, owner: str, *, name: str | None, default_view: str | None, sort: str,
                             order: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where = ["owner = ?", "deleted_at IS NULL"]
        params: list[Any] = [owner]
        if name:
            where.append("instr(lower(name), lower(?)) > 0")
            params.append(name)
        if default_view:
            where.append("default_view = ?")
            params.append(default_view)
        column = {"create_time": "created_at", "update_time": "updated_at", "name": "name COLLATE NOCASE"}[sort]
        direction = "ASC" if order == "asc" else "DESC"
        clause = " AND ".join(where)
        total = (await self.one(f"SELECT count(*) AS n FROM hub_workflows WHERE {clause}", tuple(params)))["n"]
        rows = await self.all(f"SELECT * FROM hub_workflows WHERE {clause} ORDER BY {column} {direction}, id"
                              f" {direction} LIMIT ? OFFSET ?", (*params, limit, offset))
        return rows, total

    async def update_workflow(self, wf_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        allowed = {k: v for k, v in fields.items() if k in ("name", "description", "default_view")}
        async with self.transaction() as db:
            sets = ", ".join(f"{k} = ?" for k in allowed)
            await db.execute(f"UPDATE hub_workflows SET {sets + ', ' if sets else ''}updated_at = ?"
                             " WHERE id = ? AND deleted_at IS NULL", (*allowed.values(), time.time(), wf_id))
        return await self.get_workflow(wf_id)

    async def delete_workflow(self, wf_id: str) -> None:
        """Soft delete (the seed's wording): versions stay for forks that point at them."""
        async with self.transaction() as db:
            await db.execute("UPDATE hub_workflows SET deleted_at = ? WHERE id = ?", (time.time(), wf_id))

    async def get_version(self, wf_id: str, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            return await self.one("SELECT v.* FROM hub_versions v JOIN hub_workflows w ON w.id = v.workflow_id"
                                  " WHERE v.workflow_id = ? AND v.version = w.latest_version", (wf_id,))
        return await self.one("SELECT * FROM hub_versions WHERE workflow_id = ? AND version = ?", (wf_id, version))

    async def add_version(self, wf_id: str, base_version: int | None, workflow_json: dict[str, Any],
                          created_by: str) -> dict[str, Any]:
        """Append ``latest + 1`` if ``base_version`` is the latest (None: no check, for file re-publishes).

        The check and the insert happen in one immediate transaction, so a
        second writer on the same base waits, then sees the new latest and
        gets :class:`VersionConflict`; nothing is overwritten.
        """
        now = time.time()
        async with self.transaction() as db:
            row = await self.one("SELECT latest_version FROM hub_workflows WHERE id = ? AND deleted_at IS NULL",
                                 (wf_id,))
            if row is None:
                raise KeyError(wf_id)
            current = row["latest_version"]
            if base_version is not None and base_version != current:
                raise VersionConflict(current)
            version_id = new_id()
            await db.execute(
                "INSERT INTO hub_versions (id, workflow_id, version, workflow_json, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (version_id, wf_id, current + 1, dump(workflow_json), created_by, now))
            await db.execute("UPDATE hub_workflows SET latest_version = ?, updated_at = ? WHERE id = ?",
                             (current + 1, now, wf_id))
        return {"id": version_id, "version": current + 1, "latest_version": current + 1, "created_by": created_by,
                "created_at": now}

    # --- shares and snapshots ------------------------------------------------

    async def publish(self, *, workflow: dict[str, Any], version: dict[str, Any], name: str,
                      assets: list[dict[str, Any]], listed: bool | None = None,
                      profile_username: str | None = None, hub_fields: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """Add an immutable snapshot under the workflow's share id (created on first publish)."""
        now = time.time()
        async with self.transaction() as db:
            share = await self.one("SELECT * FROM hub_shares WHERE workflow_id = ?", (workflow["id"],))
            if share is None:
                share_id = new_share_id()
                await db.execute("INSERT INTO hub_shares (share_id, workflow_id, owner) VALUES (?, ?, ?)",
                                 (share_id, workflow["id"], workflow["owner"]))
                seq = 1
            else:
                share_id = share["share_id"]
                last = await self.one("SELECT max(seq) AS n FROM hub_snapshots WHERE share_id = ?", (share_id,))
                seq = (last["n"] or 0) + 1
            updates: dict[str, Any] = {"unpublished_at": None}
            if listed is not None:
                updates["listed"] = int(listed)
            if profile_username is not None:
                updates["profile_username"] = profile_username
            if hub_fields is not None:
                updates["hub_fields"] = dump(hub_fields)
            sets = ", ".join(f"{k} = ?" for k in updates)
            await db.execute(f"UPDATE hub_shares SET {sets} WHERE share_id = ?", (*updates.values(), share_id))
            await db.execute(
                "INSERT INTO hub_snapshots (id, share_id, seq, version_id, name, workflow_json, assets, publish_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id(), share_id, seq, version["id"], name, version["workflow_json"], dump(assets), now))
        return await self.share(share_id)

    async def share(self, share_id: str, *, include_unpublished: bool = False) -> dict[str, Any] | None:
        """The share joined with its newest snapshot."""
        sql = ("SELECT s.*, n.name, n.workflow_json, n.assets, n.publish_time, n.version_id, n.seq"
               " FROM hub_shares s JOIN hub_snapshots n ON n.share_id = s.share_id"
               " WHERE s.share_id = ? AND n.seq = (SELECT max(seq) FROM hub_snapshots WHERE share_id = s.share_id)")
        if not include_unpublished:
            sql += " AND s.unpublished_at IS NULL"
        return await self.one(sql, (share_id,))

    async def share_of_workflow(self, wf_id: str) -> dict[str, Any] | None:
        row = await self.one("SELECT share_id FROM hub_shares WHERE workflow_id = ?", (wf_id,))
        return await self.share(row["share_id"], include_unpublished=True) if row else None

    async def snapshots(self, share_id: str) -> list[dict[str, Any]]:
        return await self.all("SELECT * FROM hub_snapshots WHERE share_id = ? ORDER BY seq", (share_id,))

    async def unpublish(self, share_id: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE hub_shares SET unpublished_at = ?, listed = 0 WHERE share_id = ?",
                             (time.time(), share_id))

    async def listed_shares(self, *, statuses: list[str], search: str | None, tag: str | None,
                            username: str | None) -> list[dict[str, Any]]:
        """Every listed share matching the filters, newest first (the caller pages)."""
        sql = ("SELECT s.*, n.name, n.workflow_json, n.assets, n.publish_time, n.version_id, n.seq"
               " FROM hub_shares s JOIN hub_snapshots n ON n.share_id = s.share_id"
               " WHERE n.seq = (SELECT max(seq) FROM hub_snapshots WHERE share_id = s.share_id)"
               " AND s.unpublished_at IS NULL AND s.listed = 1")
        params: list[Any] = []
        if statuses:
            sql += f" AND s.status IN ({', '.join('?' for _ in statuses)})"
            params.extend(statuses)
        if search:
            sql += " AND instr(lower(n.name), lower(?)) > 0"
            params.append(search)
        if username:
            sql += " AND s.profile_username = ?"
            params.append(username)
        sql += " ORDER BY n.publish_time DESC, s.share_id DESC"
        rows = await self.all(sql, tuple(params))
        if tag:
            rows = [r for r in rows if tag in (load(r["hub_fields"], {}).get("tags") or [])]
        return rows
