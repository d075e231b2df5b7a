"""Asset, tag, content and task records in the kernel's SQLite database.

Every table is prefixed ``assets_`` because the database file is shared with
the kernel and other plugins. An asset row is a *reference*: many assets (of
one or many owners) can point at the same content hash, which is why deleting
content checks the remaining references inside the same transaction.

Owner ``""`` is the shared library: files found by seeding the model, input
and output folders. Everyone can read those; nobody can change them through
the API; ``/api/assets/import`` copies them into a caller's own library.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import orjson

PUBLIC = ""
RARE_TAG_ROWS = 2000  # below this many rows, a tag filter starts from the tag's index
SORT_COLUMNS = {"name": "name", "created_at": "created_at", "updated_at": "updated_at",
                "size": "size", "last_access_time": "last_access", "file_size": "size"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets_contents (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mime_type TEXT,
    has_blob INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assets_items (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime_type TEXT,
    user_metadata TEXT NOT NULL DEFAULT '{}',
    preview_id TEXT,
    job_id TEXT,
    file_path TEXT,
    source TEXT,
    missing INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_access REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS assets_items_visible_created ON assets_items(owner, missing, created_at, id);
CREATE INDEX IF NOT EXISTS assets_items_visible_updated ON assets_items(owner, missing, updated_at, id);
CREATE INDEX IF NOT EXISTS assets_items_visible_name ON assets_items(owner, missing, name, id);
CREATE INDEX IF NOT EXISTS assets_items_hash ON assets_items(hash);
CREATE INDEX IF NOT EXISTS assets_items_file ON assets_items(file_path);
CREATE INDEX IF NOT EXISTS assets_items_job ON assets_items(job_id);
-- owner and missing are copied from the asset so that tag counts (/api/tags,
-- list totals for a tag filter) are answered from this table's index alone.
CREATE TABLE IF NOT EXISTS assets_tags (
    asset_id TEXT NOT NULL REFERENCES assets_items(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    owner TEXT NOT NULL,
    missing INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (asset_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assets_tags_tag ON assets_tags(tag, owner, missing, asset_id);
CREATE TABLE IF NOT EXISTS assets_seen_files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assets_tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    task_name TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error_message TEXT,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    started_at REAL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS assets_tasks_owner ON assets_tasks(owner, create_time);
"""


class FilterError(ValueError):
    """A list filter the client sent cannot be applied (bad cursor, metadata filter...)."""


@dataclass
class AssetFilter:
    """The filter shared by listing, the tag histogram and export selection."""

    owner: str
    include_public: bool = True
    include_tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    name_contains: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    asset_hash: str | None = None
    job_ids: list[str] = field(default_factory=list)
    ids: list[str] | None = None

    def only_tags(self) -> bool:
        """True when the filter is owner + include tags only (its count needs no asset rows)."""
        return bool(self.include_tags) and not (self.exclude_tags or self.name_contains or self.metadata
                                                or self.asset_hash or self.job_ids or self.ids is not None)

    def owner_sql(self, alias: str) -> str:
        if self.include_public and self.owner != PUBLIC:
            return f"{alias}.owner IN (?, '')"
        return f"{alias}.owner = ?"

    def owners(self) -> list[str]:
        return [self.owner, PUBLIC] if self.include_public and self.owner != PUBLIC else [self.owner]

    def sql(self, drive_by_tag: bool = False, only_owner: str | None = None) -> tuple[str, list[Any]]:
        """WHERE clause over ``assets_items a`` and its parameters.

        ``drive_by_tag`` picks the plan for the first include tag: start from
        the tag's rows (good when the tag is rare) instead of walking the
        sorted index and probing each row (good when it is common).
        """
        parts = ["a.missing = 0"]
        params: list[Any] = []
        if only_owner is not None:
            parts.append("a.owner = ?")
            params.append(only_owner)
        elif self.include_public and self.owner != PUBLIC:
            parts.append("a.owner IN (?, '')")
            params.append(self.owner)
        else:
            parts.append("a.owner = ?")
            params.append(self.owner)
        for i, tag in enumerate(self.include_tags):
            if i == 0 and drive_by_tag:
                parts.append("a.id IN (SELECT asset_id FROM assets_tags WHERE tag = ?)")
            else:
                parts.append("EXISTS (SELECT 1 FROM assets_tags t WHERE t.asset_id = a.id AND t.tag = ?)")
            params.append(tag)
        if self.exclude_tags:
            marks = ",".join("?" * len(self.exclude_tags))
            parts.append(f"NOT EXISTS (SELECT 1 FROM assets_tags t WHERE t.asset_id = a.id AND t.tag IN ({marks}))")
            params.extend(self.exclude_tags)
        if self.name_contains:
            escaped = self.name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parts.append("a.name LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        for key, wanted in self.metadata.items():
            path = '$."' + key + '"'
            options = wanted if isinstance(wanted, list) else [wanted]
            ors = []
            for value in options:
                if value is None:
                    ors.append("json_type(a.user_metadata, ?) = 'null'")
                    params.append(path)
                elif isinstance(value, bool):
                    ors.append("json_type(a.user_metadata, ?) = ?")
                    params.extend([path, "true" if value else "false"])
                elif isinstance(value, (int, float, str)):
                    ors.append("json_extract(a.user_metadata, ?) = ?")
                    params.extend([path, value])
                else:
                    raise FilterError(f"metadata_filter value for {key!r} must be a scalar or a list of scalars")
            parts.append("(" + " OR ".join(ors or ["0"]) + ")")
        if self.asset_hash:
            parts.append("a.hash = ?")
            params.append(self.asset_hash)
        if self.job_ids:
            parts.append(f"a.job_id IN ({','.join('?' * len(self.job_ids))})")
            params.extend(self.job_ids)
        if self.ids is not None:
            if not self.ids:
                parts.append("0")
            else:
                parts.append(f"a.id IN ({','.join('?' * len(self.ids))})")
                params.extend(self.ids)
        return " AND ".join(parts), params


def encode_cursor(value: Any, asset_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value, asset_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, asset_id = orjson.loads(raw)
        if not isinstance(asset_id, str) or not isinstance(value, (str, int, float)):
            raise ValueError
        return value, asset_id
    except Exception:
        raise FilterError("invalid cursor") from None


class AssetStore:
    """All database access for the plugin, over one aiosqlite connection.

    ``lock`` serialises the read-modify-write sequences (create with content
    dedup, delete with reference counting) so that concurrent requests never
    both think they created the same content or remove content in use.
    """

    def __init__(self, path: str):
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, timeout=30)
        self.db.row_factory = aiosqlite.Row
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA foreign_keys=ON")
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.executescript(SCHEMA)
        await self.db.commit()
        await self.db.execute("PRAGMA optimize")

    async def close(self) -> None:
        if self.db is not None:
            await self.db.execute("PRAGMA optimize")  # keeps planner statistics current across runs
            await self.db.close()
            self.db = None

    # --- contents ---------------------------------------------------------

    async def content(self, content_hash: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT * FROM assets_contents WHERE hash = ?", (content_hash,)) as cur:
            row = await cur.fetchone()
        return dict(row) if row else None

    async def ensure_content(self, content_hash: str, size: int, mime_type: str | None, *, blob: bool) -> bool:
        """Record content; True when it was not known before (the ``created_new`` answer)."""
        existing = await self.content(content_hash)
        if existing is None:
            await self.db.execute(
                "INSERT INTO assets_contents(hash, size, mime_type, has_blob, created_at) VALUES (?,?,?,?,?)",
                (content_hash, size, mime_type, int(blob), time.time()))
            return True
        if blob and not existing["has_blob"]:
            await self.db.execute("UPDATE assets_contents SET has_blob = 1 WHERE hash = ?", (content_hash,))
        return False

    async def owner_knows_hash(self, owner: str, content_hash: str) -> bool:
        """Whether ``owner`` may reference this content: one of its own or a shared asset has it."""
        async with self.db.execute(
                "SELECT 1 FROM assets_items WHERE hash = ? AND owner IN (?, '') LIMIT 1",
                (content_hash, owner)) as cur:
            return await cur.fetchone() is not None

    async def references(self, content_hash: str) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM assets_items WHERE hash = ?", (content_hash,)) as cur:
            return (await cur.fetchone())[0]

    async def drop_content(self, content_hash: str) -> None:
        await self.db.execute("DELETE FROM assets_contents WHERE hash = ?", (content_hash,))

    # --- assets -----------------------------------------------------------

    async def insert_asset(self, *, owner: str, name: str, content_hash: str, size: int,
                           mime_type: str | None, tags: list[str] | None = None,
                           user_metadata: dict[str, Any] | None = None, preview_id: str | None = None,
                           job_id: str | None = None, file_path: str | None = None,
                           source: str | None = None, asset_id: str | None = None,
                           commit: bool = True) -> str:
        now = time.time()
        asset_id = asset_id or str(uuid.uuid4())
        await self.db.execute(
            "INSERT INTO assets_items(id, owner, name, hash, size, mime_type, user_metadata, preview_id,"
            " job_id, file_path, source, created_at, updated_at, last_access)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (asset_id, owner, name, content_hash, size, mime_type,
             orjson.dumps(user_metadata or {}).decode(), preview_id, job_id, file_path, source, now, now, now))
        if tags:
            await self.db.executemany("INSERT OR IGNORE INTO assets_tags(asset_id, tag, owner) VALUES (?, ?, ?)",
                                      [(asset_id, t, owner) for t in tags])
        if commit:
            await self.db.commit()
        return asset_id

    async def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """Bulk-insert prepared asset rows (with ``tags``) in one transaction; for seeding tools and benchmarks."""
        now = time.time()
        items, tags, contents = [], [], []
        for r in rows:
            items.append((r["id"], r["owner"], r["name"], r["hash"], r["size"], r.get("mime_type"),
                          orjson.dumps(r.get("user_metadata") or {}).decode(), r.get("file_path"),
                          r.get("created_at", now), r.get("created_at", now), r.get("created_at", now)))
            tags += [(r["id"], t, r["owner"]) for t in r.get("tags", [])]
            contents.append((r["hash"], r["size"], r.get("mime_type"), now))
        await self.db.executemany("INSERT OR IGNORE INTO assets_contents(hash, size, mime_type, has_blob, created_at)"
                                  " VALUES (?,?,?,0,?)", contents)
        await self.db.executemany(
            "INSERT INTO assets_items(id, owner, name, hash, size, mime_type, user_metadata, file_path,"
            " created_at, updated_at, last_access) VALUES (?,?,?,?,?,?,?,?,?,?,?)", items)
        await self.db.executemany("INSERT OR IGNORE INTO assets_tags(asset_id, tag, owner) VALUES (?, ?, ?)", tags)
        await self.db.commit()
        await self.db.execute("ANALYZE")

    async def get(self, asset_id: str, owner: str, *, include_public: bool = True) -> dict[str, Any] | None:
        """One visible asset (own or shared), with its tags, or None."""
        owners = (owner, PUBLIC) if include_public else (owner, owner)
        async with self.db.execute("SELECT * FROM assets_items WHERE id = ? AND owner IN (?, ?)",
                                   (asset_id, *owners)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        record = dict(row)
        record["tags"] = await self.tags_of(asset_id)
        return record

    async def tags_of(self, asset_id: str) -> list[str]:
        async with self.db.execute("SELECT tag FROM assets_tags WHERE asset_id = ? ORDER BY tag",
                                   (asset_id,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def touch(self, asset_id: str) -> None:
        await self.db.execute("UPDATE assets_items SET last_access = ? WHERE id = ?", (time.time(), asset_id))
        await self.db.commit()

    async def update(self, asset_id: str, fields: dict[str, Any]) -> None:
        allowed = {"name", "mime_type", "preview_id", "user_metadata"}
        sets, params = [], []
        for key, value in fields.items():
            if key not in allowed:
                continue
            if key == "user_metadata":
                value = orjson.dumps(value).decode()
            sets.append(f"{key} = ?")
            params.append(value)
        sets.append("updated_at = ?")
        params.append(time.time())
        await self.db.execute(f"UPDATE assets_items SET {', '.join(sets)} WHERE id = ?", (*params, asset_id))
        await self.db.commit()

    async def set_missing(self, asset_ids: list[str], missing: bool) -> None:
        """Mark assets (and their tag rows, which carry the flag) missing or present."""
        rows = [(int(missing), i) for i in asset_ids]
        await self.db.executemany("UPDATE assets_items SET missing = ? WHERE id = ?", rows)
        await self.db.executemany("UPDATE assets_tags SET missing = ? WHERE asset_id = ?", rows)

    async def delete(self, asset_id: str) -> None:
        await self.db.execute("DELETE FROM assets_tags WHERE asset_id = ?", (asset_id,))
        await self.db.execute("UPDATE assets_items SET preview_id = NULL WHERE preview_id = ?", (asset_id,))
        await self.db.execute("DELETE FROM assets_items WHERE id = ?", (asset_id,))

    async def add_tags(self, asset_id: str, tags: list[str]) -> tuple[list[str], list[str]]:
        current = set(await self.tags_of(asset_id))
        added = [t for t in dict.fromkeys(tags) if t not in current]
        present = [t for t in dict.fromkeys(tags) if t in current]
        if added:
            await self.db.executemany(
                "INSERT OR IGNORE INTO assets_tags(asset_id, tag, owner, missing)"
                " SELECT id, ?, owner, missing FROM assets_items WHERE id = ?", [(t, asset_id) for t in added])
            await self.db.execute("UPDATE assets_items SET updated_at = ? WHERE id = ?", (time.time(), asset_id))
        await self.db.commit()
        return added, present

    async def remove_tags(self, asset_id: str, tags: list[str]) -> tuple[list[str], list[str]]:
        current = set(await self.tags_of(asset_id))
        removed = [t for t in dict.fromkeys(tags) if t in current]
        absent = [t for t in dict.fromkeys(tags) if t not in current]
        if removed:
            await self.db.executemany("DELETE FROM assets_tags WHERE asset_id = ? AND tag = ?",
                                      [(asset_id, t) for t in removed])
            await self.db.execute("UPDATE assets_items SET updated_at = ? WHERE id = ?", (time.time(), asset_id))
        await self.db.commit()
        return removed, absent

    async def list(self, flt: AssetFilter, *, sort: str = "created_at", order: str = "desc",
                   limit: int = 20, offset: int = 0, after: str | None = None
                   ) -> tuple[list[dict[str, Any]], int, str | None]:
        """A page of assets, the total matching, and the cursor of the next page (or None).

        With ``after`` (a cursor from a previous page) paging is keyset-based,
        stable while rows are added; without it ``offset`` applies.
        """
        column = SORT_COLUMNS[sort]
        desc = order == "desc"
        drive = False
        if flt.include_tags:
            rarest = await self._tag_rows(flt.include_tags[0], flt)
            drive = rarest < RARE_TAG_ROWS
        if flt.only_tags():
            extra = "".join(" AND EXISTS (SELECT 1 FROM assets_tags u WHERE u.asset_id = t.asset_id AND u.tag = ?)"
                            for _ in flt.include_tags[1:])
            async with self.db.execute(
                    f"SELECT COUNT(*) FROM assets_tags t WHERE t.tag = ? AND {flt.owner_sql('t')}"
                    f" AND t.missing = 0{extra}", (flt.include_tags[0], flt.owner, *flt.include_tags[1:])) as cur:
                total = (await cur.fetchone())[0]
        else:
            where, params = flt.sql(drive_by_tag=drive)
            async with self.db.execute(f"SELECT COUNT(*) FROM assets_items a WHERE {where}", params) as cur:
                total = (await cur.fetchone())[0]
        cursor_value = decode_cursor(after) if after else None
        if cursor_value is not None:
            offset = 0
        direction = "DESC" if desc else "ASC"
        # One ordered query per owner (own, shared): each walks its sorted index
        # and stops early; the pages are merged here. An IN over both owners
        # would make SQLite sort every visible row instead.
        pages = []
        for owner in flt.owners():
            where, params = flt.sql(drive_by_tag=drive, only_owner=owner)
            if cursor_value is not None:
                where += f" AND (a.{column}, a.id) {'<' if desc else '>'} (?, ?)"
                params += list(cursor_value)
            sql = (f"SELECT a.* FROM assets_items a WHERE {where}"
                   f" ORDER BY a.{column} {direction}, a.id {direction} LIMIT ?")
            async with self.db.execute(sql, (*params, offset + limit + 1)) as cur:
                pages.append([dict(r) for r in await cur.fetchall()])
        merged = pages[0] if len(pages) == 1 else list(
            heapq.merge(*pages, key=lambda r: (r[column], r["id"]), reverse=desc))
        rows = merged[offset:offset + limit + 1]
        more = len(rows) > limit
        rows = rows[:limit]
        await self._attach_tags(rows)
        cursor = encode_cursor(rows[-1][column], rows[-1]["id"]) if more and rows else None
        return rows, total, cursor

    async def _tag_rows(self, tag: str, flt: AssetFilter) -> int:
        """How many visible assets carry ``tag`` (index-only), to choose a query plan."""
        async with self.db.execute(f"SELECT COUNT(*) FROM assets_tags t WHERE t.tag = ? AND {flt.owner_sql('t')}"
                                   " AND t.missing = 0", (tag, flt.owner)) as cur:
            return (await cur.fetchone())[0]

    async def _attach_tags(self, rows: list[dict[str, Any]]) -> None:
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            r["tags"] = []
        if not by_id:
            return
        marks = ",".join("?" * len(by_id))
        async with self.db.execute(f"SELECT asset_id, tag FROM assets_tags WHERE asset_id IN ({marks})"
                                   " ORDER BY tag", list(by_id)) as cur:
            for asset_id, tag in await cur.fetchall():
                by_id[asset_id]["tags"].append(tag)

    async def tag_histogram(self, flt: AssetFilter, limit: int = 100) -> dict[str, int]:
        where, params = flt.sql()
        sql = (f"SELECT t.tag, COUNT(*) AS n FROM assets_tags t JOIN assets_items a ON a.id = t.asset_id"
               f" WHERE {where} GROUP BY t.tag ORDER BY n DESC, t.tag LIMIT ?")
        async with self.db.execute(sql, (*params, limit)) as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def list_tags(self, owner: str, *, include_public: bool, prefix: str | None, search: str | None,
                        order: str, limit: int, offset: int) -> tuple[list[tuple[str, int]], int]:
        owners = "t.owner IN (?, '')" if include_public else "t.owner = ?"
        where = [owners, "t.missing = 0"]
        params: list[Any] = [owner]
        for text, pattern in ((prefix, "{}%"), (search, "%{}%")):
            if text:
                escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append("t.tag LIKE ? ESCAPE '\\'")
                params.append(pattern.format(escaped))
        base = f"FROM assets_tags t WHERE {' AND '.join(where)} GROUP BY t.tag"
        async with self.db.execute(f"SELECT COUNT(*) FROM (SELECT t.tag {base})", params) as cur:
            total = (await cur.fetchone())[0]
        order_by = "t.tag ASC" if order == "name_asc" else "n DESC, t.tag ASC"
        async with self.db.execute(f"SELECT t.tag, COUNT(*) AS n {base} ORDER BY {order_by} LIMIT ? OFFSET ?",
                                   (*params, limit, offset)) as cur:
            rows = [(r[0], r[1]) for r in await cur.fetchall()]
        return rows, total

    async def find_by_file(self, file_path: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT * FROM assets_items WHERE file_path = ? AND owner = ''",
                                   (file_path,)) as cur:
            row = await cur.fetchone()
        return dict(row) if row else None

    async def any_file_for_hash(self, content_hash: str) -> list[str]:
        async with self.db.execute("SELECT file_path FROM assets_items WHERE hash = ? AND file_path IS NOT NULL",
                                   (content_hash,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    # --- tasks ------------------------------------------------------------

    async def create_task(self, owner: str, task_name: str, payload: dict[str, Any],
                          idempotency_key: str | None = None) -> dict[str, Any]:
        now = time.time()
        task_id = str(uuid.uuid4())
        await self.db.execute(
            "INSERT INTO assets_tasks(id, owner, task_name, idempotency_key, payload, status, create_time,"
            " update_time) VALUES (?,?,?,?,?,?,?,?)",
            (task_id, owner, task_name, idempotency_key or task_id, orjson.dumps(payload).decode(),
             "created", now, now))
        await self.db.commit()
        return await self.get_task(task_id, owner)

    async def update_task(self, task_id: str, **fields: Any) -> None:
        sets, params = [], []
        for key in ("status", "error_message", "started_at", "completed_at"):
            if key in fields:
                sets.append(f"{key} = ?")
                params.append(fields[key])
        if "result" in fields:
            sets.append("result = ?")
            params.append(orjson.dumps(fields["result"]).decode())
        sets.append("update_time = ?")
        params.append(time.time())
        await self.db.execute(f"UPDATE assets_tasks SET {', '.join(sets)} WHERE id = ?", (*params, task_id))
        await self.db.commit()

    async def get_task(self, task_id: str, owner: str) -> dict[str, Any] | None:
        async with self.db.execute("SELECT * FROM assets_tasks WHERE id = ? AND owner = ?",
                                   (task_id, owner)) as cur:
            row = await cur.fetchone()
        return _task(row) if row else None

    async def list_tasks(self, owner: str, *, task_name: str | None, idempotency_key: str | None,
                         status: str | None, created_after: float | None, created_before: float | None,
                         newest_first: bool, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where, params = ["owner = ?"], [owner]
        for column, value in (("task_name", task_name), ("idempotency_key", idempotency_key),
                              ("status", status)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if created_after is not None:
            where.append("create_time > ?")
            params.append(created_after)
        if created_before is not None:
            where.append("create_time < ?")
            params.append(created_before)
        clause = " AND ".join(where)
        async with self.db.execute(f"SELECT COUNT(*) FROM assets_tasks WHERE {clause}", params) as cur:
            total = (await cur.fetchone())[0]
        direction = "DESC" if newest_first else "ASC"
        async with self.db.execute(f"SELECT * FROM assets_tasks WHERE {clause} ORDER BY create_time {direction}"
                                   " LIMIT ? OFFSET ?", (*params, limit, offset)) as cur:
            rows = [_task(r) for r in await cur.fetchall()]
        return rows, total

    async def fail_interrupted_tasks(self) -> int:
        """Tasks left ``created``/``running`` by a crash can never finish: mark them failed."""
        now = time.time()
        cur = await self.db.execute(
            "UPDATE assets_tasks SET status = 'failed', error_message = 'interrupted by a server restart',"
            " update_time = ?, completed_at = ? WHERE status IN ('created', 'running')", (now, now))
        await self.db.commit()
        return cur.rowcount


def _task(row: Any) -> dict[str, Any]:
    record = dict(row)
    record["payload"] = orjson.loads(record["payload"])
    record["result"] = orjson.loads(record["result"]) if record["result"] else None
    return record
