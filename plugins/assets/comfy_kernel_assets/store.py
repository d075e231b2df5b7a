"""Asset, tag, content and task records in the kernel's database (SQLite or PostgreSQL).

Every table is prefixed ``assets_`` because the database is shared with the
kernel and other plugins. An asset row is a *reference*: many assets (of one
or many owners) can point at the same content hash, which is why deleting
content checks the remaining references inside the same transaction.

Owner ``""`` is the shared library: files found by seeding the model, input
and output folders. Everyone can read those; nobody can change them through
the API; ``/api/assets/import`` copies them into a caller's own library.

The tables are created by the plugin's migrations (``migrations/``); every
statement here is SQLAlchemy Core, run by ``kernel.database``. Booleans are
stored as integers and JSON as text, as the SQLite schema always had them.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ColumnElement

from comfy_kernel.storage import Database, UnstorableText, connect

PUBLIC = ""
RARE_TAG_ROWS = 2000  # below this many rows, a tag filter starts from the tag's index
SORT_COLUMNS = {"name": "name", "created_at": "created_at", "updated_at": "updated_at",
                "size": "size", "last_access_time": "last_access", "file_size": "size"}
IN_CHUNK = 5000  # ids per IN list: both back-ends cap the parameters of one statement
NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # a NUL character in JSON text (an unescaped \u0000)

metadata = MetaData()
contents_table = Table(
    "assets_contents", metadata,
    Column("hash", Text, primary_key=True), Column("size", BigInteger), Column("mime_type", Text),
    Column("has_blob", Integer), Column("created_at", Double),
)
items_table = Table(
    "assets_items", metadata,
    Column("id", Text, primary_key=True), Column("owner", Text), Column("name", Text), Column("hash", Text),
    Column("size", BigInteger), Column("mime_type", Text), Column("user_metadata", Text),
    Column("preview_id", Text), Column("job_id", Text), Column("file_path", Text), Column("source", Text),
    Column("missing", Integer), Column("created_at", Double), Column("updated_at", Double),
    Column("last_access", Double),
)
tags_table = Table(
    "assets_tags", metadata,
    Column("asset_id", Text, primary_key=True), Column("tag", Text, primary_key=True), Column("owner", Text),
    Column("missing", Integer),
)
seen_table = Table(
    "assets_seen_files", metadata,
    Column("path", Text, primary_key=True), Column("size", BigInteger), Column("mtime", Double),
    Column("hash", Text),
)
tasks_table = Table(
    "assets_tasks", metadata,
    Column("id", Text, primary_key=True), Column("owner", Text), Column("task_name", Text),
    Column("idempotency_key", Text), Column("payload", Text), Column("status", Text), Column("result", Text),
    Column("error_message", Text), Column("create_time", Double), Column("update_time", Double),
    Column("started_at", Double), Column("completed_at", Double),
)
C, A, T, S, K = contents_table.c, items_table.c, tags_table.c, seen_table.c, tasks_table.c
ITEM_NAMES = [c.name for c in items_table.columns]
CONTENT_NAMES = [c.name for c in contents_table.columns]
TASK_NAMES = [c.name for c in tasks_table.columns]

# Statements run once per row or per request, compiled once (named parameters).
_INSERT_ITEM = items_table.insert()  # every column a parameter named after it
_TOUCH = update(items_table).where(A.id == bindparam("aid")).values(last_access=bindparam("now"))
_GET = select(*items_table.c).where(A.id == bindparam("aid"), A.owner.in_([bindparam("o1"), bindparam("o2")]))
_TAGS_OF = select(T.tag).where(T.asset_id == bindparam("aid")).order_by(T.tag)
_RESEEDED = (update(items_table).where(A.id == bindparam("aid"))
             .values(hash=bindparam("new_hash"), size=bindparam("new_size"), updated_at=bindparam("now"), missing=0))
_TAGS_PRESENT = update(tags_table).where(T.asset_id == bindparam("aid")).values(missing=0)
_HAS_JOB_FILE = select(A.id).where(A.owner == bindparam("owner"), A.job_id == bindparam("job"),
                                   A.file_path == bindparam("path")).limit(1)


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

    def owners(self) -> list[str]:
        return [self.owner, PUBLIC] if self.include_public and self.owner != PUBLIC else [self.owner]

    def owner_clause(self, column: Any) -> ColumnElement:
        owners = self.owners()
        return column == owners[0] if len(owners) == 1 else column.in_(owners)

    def where(self, db: Database, drive_by_tag: bool = False, only_owner: str | None = None) -> list[ColumnElement]:
        """Conditions over ``assets_items`` in the SQL of ``db``.

        ``drive_by_tag`` picks the plan for the first include tag: start from
        the tag's rows (good when the tag is rare) instead of walking the
        sorted index and probing each row (good when it is common). Text the
        database cannot hold (``Database.storable``) matches nothing.
        """
        ok = db.storable
        parts: list[ColumnElement] = [A.missing == 0]
        parts.append(A.owner == only_owner if only_owner is not None else self.owner_clause(A.owner))
        for i, tag in enumerate(self.include_tags):
            t = tags_table.alias()
            if i == 0 and drive_by_tag:
                parts.append(A.id.in_(select(t.c.asset_id).where(t.c.tag == tag)))
            else:
                parts.append(select(t.c.asset_id).where(t.c.asset_id == A.id, t.c.tag == tag).exists())
        if self.exclude_tags:
            t = tags_table.alias()
            parts.append(~select(t.c.asset_id).where(t.c.asset_id == A.id, t.c.tag.in_(self.exclude_tags)).exists())
        if self.name_contains:
            wanted_name = self.name_contains
            parts.append(A.name.ilike(f"%{like_escape(wanted_name)}%", escape="\\") if ok(wanted_name) else false())
        for key, wanted in self.metadata.items():
            options = wanted if isinstance(wanted, list) else [wanted]
            ors = [metadata_equals(db.kind, key, value) for value in options
                   if not isinstance(value, str) or ok(value)]
            parts.append(or_(*ors) if ors else false())
        if self.asset_hash:
            parts.append(A.hash == self.asset_hash)
        if self.job_ids:
            job_ids = [j for j in self.job_ids if ok(j)]
            parts.append(A.job_id.in_(job_ids) if job_ids else false())
        if self.ids is not None:
            ids = [i for i in self.ids if ok(i)]
            parts.append(A.id.in_(ids) if ids else false())
        return parts


def like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def metadata_equals(kind: str, key: str, value: Any) -> ColumnElement:
    """``user_metadata[key]`` equals the JSON scalar ``value``, in the JSON functions of the database.

    SQLite answers with ``json_type``/``json_extract`` (so a number also
    matches a stored ``true`` of the same value, as it always did);
    PostgreSQL compares ``jsonb`` values.
    """
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise FilterError(f"metadata_filter value for {key!r} must be a scalar or a list of scalars")
    if kind == "postgresql":
        stored = cast(A.user_metadata, JSONB).op("->")(literal(key, Text))
        return stored == cast(literal(orjson.dumps(value).decode(), Text), JSONB)
    path = '$."' + key + '"'
    if value is None:
        return func.json_type(A.user_metadata, path) == "null"
    if isinstance(value, bool):
        return func.json_type(A.user_metadata, path) == ("true" if value else "false")
    return func.json_extract(A.user_metadata, path) == value


def json_text(kind: str, column: Any, key: str) -> ColumnElement:
    """The top-level ``key`` of a JSON text column, as text."""
    if kind == "postgresql":
        return cast(column, JSONB).op("->>", return_type=Text)(literal(key, Text))
    return func.json_extract(column, f"$.{key}")


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


def _cursor_value(column: str, value: Any) -> Any:
    """A cursor's sort value as the column's type (a cursor of another sort is refused, not compared)."""
    if column == "name":
        if isinstance(value, str):
            return value
    elif column == "size":
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise FilterError("invalid cursor")


def _chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i:i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK)]


class AssetStore:
    """All database access for the plugin, on the kernel's database.

    ``lock`` serialises the read-modify-write sequences (create with content
    dedup, delete with reference counting) so that concurrent requests never
    both think they created the same content or remove content in use; each
    sequence is also one transaction, so a failure leaves nothing half done.
    Methods that take ``q`` run on it: a transaction (``db.transaction()``)
    or, when none is given, the database itself.
    """

    def __init__(self, target: str | Database):
        self.db: Database = connect(target) if isinstance(target, str) else target
        self.owns_db = isinstance(target, str)  # opened and closed here (benchmarks, tools), else by the kernel
        self.lock = asyncio.Lock()
        self.ready = False
        db = self.db
        self._insert_tag = db.insert(tags_table).on_conflict_do_nothing(index_elements=["asset_id", "tag"])
        self._insert_content = db.insert(contents_table).on_conflict_do_nothing(index_elements=["hash"])
        seen = db.insert(seen_table)
        self._upsert_seen = seen.on_conflict_do_update(index_elements=["path"], set_={
            "size": seen.excluded.size, "mtime": seen.excluded.mtime, "hash": seen.excluded.hash})

    async def open(self) -> None:
        if self.owns_db:
            from comfy_kernel.migrations import KERNEL
            from comfy_kernel.storage import upgrade

            from .migrations import ASSETS

            await self.db.open()
            await upgrade(self.db, [KERNEL, ASSETS])
        for stmt in (_INSERT_ITEM, _TOUCH, _GET, _TAGS_OF, _RESEEDED, _TAGS_PRESENT, _HAS_JOB_FILE,
                     self._insert_tag, self._insert_content, self._upsert_seen):
            self.db.prepare(stmt)
        self.ready = True
        await self.optimize()

    async def close(self) -> None:
        if self.ready:
            self.ready = False
            await self.optimize()  # keeps planner statistics current across runs
        if self.owns_db:
            await self.db.close()

    async def optimize(self) -> None:
        """SQLite's ``PRAGMA optimize`` (PostgreSQL's autovacuum keeps its statistics itself).

        It runs on the connection that reads, whose queries tell SQLite which
        tables' statistics are worth refreshing.
        """
        if self.db.kind == "sqlite":
            await self.db.fetch_all(text("PRAGMA optimize"))

    def json(self, value: Any) -> str:
        """``value`` as the JSON text of a column.

        PostgreSQL's ``jsonb``, which the metadata filter and the export look-up
        read these columns as, cannot hold a NUL character: such JSON is
        refused as ``UnstorableText`` (a 400 answer), as NUL in text is.
        """
        encoded = orjson.dumps(value).decode()
        if self.db.kind == "postgresql" and "u0000" in encoded and NUL_ESCAPE.search(encoded):
            raise UnstorableText("text with a NUL character cannot be stored")
        return encoded

    # --- contents ---------------------------------------------------------

    async def content(self, content_hash: str, q: Any = None) -> dict[str, Any] | None:
        row = await (q or self.db).fetch_one(select(*contents_table.c).where(C.hash == content_hash))
        return dict(zip(CONTENT_NAMES, row, strict=True)) if row else None

    async def _ensure_content(self, q: Any, content_hash: str, size: int, mime_type: str | None, blob: bool) -> bool:
        """Record content; True when it was not known before (the ``created_new`` answer)."""
        existing = await self.content(content_hash, q)
        if existing is None:
            await q.execute(contents_table.insert().values(hash=content_hash, size=size, mime_type=mime_type,
                                                           has_blob=int(blob), created_at=time.time()))
            return True
        if blob and not existing["has_blob"]:
            await q.execute(update(contents_table).where(C.hash == content_hash).values(has_blob=1))
        return False

    async def owner_knows_hash(self, owner: str, content_hash: str) -> bool:
        """Whether ``owner`` may reference this content: one of its own or a shared asset has it."""
        found = await self.db.fetch_one(select(A.id).where(A.hash == content_hash, A.owner.in_([owner, PUBLIC]))
                                        .limit(1))
        return found is not None

    # --- assets -----------------------------------------------------------

    async def insert_asset(self, *, owner: str, name: str, content_hash: str, size: int,
                           mime_type: str | None, tags: list[str] | None = None,
                           user_metadata: dict[str, Any] | None = None, preview_id: str | None = None,
                           job_id: str | None = None, file_path: str | None = None,
                           source: str | None = None, asset_id: str | None = None,
                           record_content: bool = False, blob: bool = False) -> tuple[str, bool]:
        """Add an asset with its tags in one transaction; returns ``(id, created_new)``.

        With ``record_content`` the content row is recorded in the same
        transaction (``blob``: its bytes are stored under blobs/), and
        ``created_new`` says whether it was new.
        """
        now = time.time()
        asset_id = asset_id or str(uuid.uuid4())
        created_new = False
        async with self.db.transaction() as tx:
            if record_content:
                created_new = await self._ensure_content(tx, content_hash, size, mime_type, blob)
            await tx.execute(_INSERT_ITEM, {
                "id": asset_id, "owner": owner, "name": name, "hash": content_hash, "size": size,
                "mime_type": mime_type, "user_metadata": self.json(user_metadata or {}),
                "preview_id": preview_id, "job_id": job_id, "file_path": file_path, "source": source,
                "missing": 0, "created_at": now, "updated_at": now, "last_access": now})
            for tag in dict.fromkeys(tags or []):
                await tx.execute(self._insert_tag, {"asset_id": asset_id, "tag": tag, "owner": owner, "missing": 0})
        return asset_id, created_new

    async def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """Bulk-insert prepared asset rows (with ``tags``) in one transaction; for seeding tools and benchmarks."""
        now = time.time()
        async with self.db.transaction() as tx:
            for r in rows:
                await tx.execute(self._insert_content, {"hash": r["hash"], "size": r["size"],
                                                        "mime_type": r.get("mime_type"), "has_blob": 0,
                                                        "created_at": now})
            for r in rows:
                at = r.get("created_at", now)
                await tx.execute(_INSERT_ITEM, {
                    "id": r["id"], "owner": r["owner"], "name": r["name"], "hash": r["hash"], "size": r["size"],
                    "mime_type": r.get("mime_type"), "user_metadata": self.json(r.get("user_metadata") or {}),
                    "file_path": r.get("file_path"), "missing": 0, "created_at": at, "updated_at": at,
                    "last_access": at})
            for r in rows:
                for tag in r.get("tags", []):
                    await tx.execute(self._insert_tag, {"asset_id": r["id"], "tag": tag, "owner": r["owner"],
                                                        "missing": 0})
        for table in (items_table, tags_table, contents_table):  # fresh statistics for the query plans
            await self.db.execute(text(f"ANALYZE {table.name}"))

    async def get(self, asset_id: str, owner: str, *, include_public: bool = True) -> dict[str, Any] | None:
        """One visible asset (own or shared), with its tags, or None."""
        if not self.db.storable(asset_id):
            return None
        row = await self.db.fetch_one(_GET, {"aid": asset_id, "o1": owner, "o2": PUBLIC if include_public else owner})
        if row is None:
            return None
        record = dict(zip(ITEM_NAMES, row, strict=True))
        record["tags"] = await self.tags_of(asset_id)
        return record

    async def id_taken(self, asset_id: str) -> bool:
        """Whether any owner has an asset with this id."""
        return await self.db.fetch_one(select(A.id).where(A.id == asset_id)) is not None

    async def tags_of(self, asset_id: str, q: Any = None) -> list[str]:
        return [r[0] for r in await (q or self.db).fetch_all(_TAGS_OF, {"aid": asset_id})]

    async def touch(self, asset_id: str) -> None:
        await self.db.execute(_TOUCH, {"aid": asset_id, "now": time.time()})

    async def update(self, asset_id: str, fields: dict[str, Any]) -> None:
        allowed = {"name", "mime_type", "preview_id", "user_metadata"}
        values = {k: self.json(v) if k == "user_metadata" else v for k, v in fields.items() if k in allowed}
        values["updated_at"] = time.time()
        await self.db.execute(update(items_table).where(A.id == asset_id).values(**values))

    async def set_missing(self, asset_ids: Sequence[str], missing: bool, q: Any = None) -> None:
        """Mark assets (and their tag rows, which carry the flag) missing or present."""
        if not asset_ids:
            return
        if q is None:
            async with self.db.transaction() as tx:
                await self.set_missing(asset_ids, missing, tx)
            return
        for chunk in _chunks(asset_ids):
            await q.execute(update(items_table).where(A.id.in_(chunk)).values(missing=int(missing)))
            await q.execute(update(tags_table).where(T.asset_id.in_(chunk)).values(missing=int(missing)))

    async def delete(self, asset_id: str, content_hash: str | None = None) -> bool:
        """Delete an asset in one transaction; with ``content_hash``, also that content's row when no
        asset refers to it any more. True when the content row went (its blob can go too)."""
        async with self.db.transaction() as tx:
            await tx.execute(delete(tags_table).where(T.asset_id == asset_id))
            await tx.execute(update(items_table).where(A.preview_id == asset_id).values(preview_id=None))
            await tx.execute(delete(items_table).where(A.id == asset_id))
            if content_hash is None:
                return False
            if await tx.scalar(select(func.count()).select_from(items_table).where(A.hash == content_hash)):
                return False
            await tx.execute(delete(contents_table).where(C.hash == content_hash))
            return True

    async def add_tags(self, asset_id: str, tags: list[str]) -> tuple[list[str], list[str]]:
        async with self.db.transaction() as tx:
            current = set(await self.tags_of(asset_id, tx))
            added = [t for t in dict.fromkeys(tags) if t not in current]
            present = [t for t in dict.fromkeys(tags) if t in current]
            for tag in added:
                await tx.execute(self.db.insert(tags_table).from_select(
                    ["asset_id", "tag", "owner", "missing"],
                    select(A.id, literal(tag, Text), A.owner, A.missing).where(A.id == asset_id),
                ).on_conflict_do_nothing(index_elements=["asset_id", "tag"]))
            if added:
                await tx.execute(update(items_table).where(A.id == asset_id).values(updated_at=time.time()))
        return added, present

    async def remove_tags(self, asset_id: str, tags: list[str]) -> tuple[list[str], list[str]]:
        async with self.db.transaction() as tx:
            current = set(await self.tags_of(asset_id, tx))
            removed = [t for t in dict.fromkeys(tags) if t in current]
            absent = [t for t in dict.fromkeys(tags) if t not in current]
            if removed:
                await tx.execute(delete(tags_table).where(T.asset_id == asset_id, T.tag.in_(removed)))
                await tx.execute(update(items_table).where(A.id == asset_id).values(updated_at=time.time()))
        return removed, absent

    async def list(self, flt: AssetFilter, *, sort: str = "created_at", order: str = "desc",
                   limit: int = 20, offset: int = 0, after: str | None = None
                   ) -> tuple[list[dict[str, Any]], int, str | None]:
        """A page of assets, the total matching, and the cursor of the next page (or None).

        With ``after`` (a cursor from a previous page) paging is keyset-based,
        stable while rows are added; without it ``offset`` applies.
        """
        column = SORT_COLUMNS[sort]
        sort_col = items_table.c[column]
        desc = order == "desc"
        drive = False
        if flt.include_tags:
            rarest = await self._tag_rows(flt.include_tags[0], flt)
            drive = rarest < RARE_TAG_ROWS
        if flt.only_tags():
            t = tags_table.alias("t")
            conds = [t.c.tag == flt.include_tags[0], flt.owner_clause(t.c.owner), t.c.missing == 0]
            for tag in flt.include_tags[1:]:
                u = tags_table.alias()
                conds.append(select(u.c.asset_id).where(u.c.asset_id == t.c.asset_id, u.c.tag == tag).exists())
            total = await self.db.scalar(select(func.count()).select_from(t).where(*conds))
        else:
            total = await self.db.scalar(select(func.count()).select_from(items_table)
                                         .where(*flt.where(self.db, drive_by_tag=drive)))
        cursor_value = decode_cursor(after) if after else None
        if cursor_value is not None:
            offset = 0
            bound = tuple_(literal(_cursor_value(column, cursor_value[0]), sort_col.type),
                           literal(cursor_value[1], Text))
        # One ordered query per owner (own, shared): each walks its sorted index
        # and stops early; the pages are merged here. An IN over both owners
        # would make the database sort every visible row instead.
        pages = []
        for owner in flt.owners():
            conds = flt.where(self.db, drive_by_tag=drive, only_owner=owner)
            if cursor_value is not None:
                key = tuple_(sort_col, A.id)
                conds.append(key < bound if desc else key > bound)
            ordering = (sort_col.desc(), A.id.desc()) if desc else (sort_col.asc(), A.id.asc())
            rows = await self.db.fetch_all(select(*items_table.c).where(*conds).order_by(*ordering)
                                           .limit(offset + limit + 1))
            pages.append([dict(zip(ITEM_NAMES, r, strict=True)) for r in rows])
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
        return await self.db.scalar(select(func.count()).select_from(tags_table)
                                    .where(T.tag == tag, flt.owner_clause(T.owner), T.missing == 0))

    async def _attach_tags(self, rows: list[dict[str, Any]]) -> None:
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            r["tags"] = []
        if not by_id:
            return
        for asset_id, tag in await self.db.fetch_all(select(T.asset_id, T.tag).where(T.asset_id.in_(list(by_id)))
                                                     .order_by(T.tag)):
            by_id[asset_id]["tags"].append(tag)

    async def tag_histogram(self, flt: AssetFilter, limit: int = 100) -> dict[str, int]:
        t = tags_table.alias("t")
        n = func.count().label("n")
        stmt = (select(t.c.tag, n).select_from(t.join(items_table, A.id == t.c.asset_id))
                .where(*flt.where(self.db)).group_by(t.c.tag).order_by(n.desc(), t.c.tag).limit(limit))
        return {r[0]: r[1] for r in await self.db.fetch_all(stmt)}

    async def list_tags(self, owner: str, *, include_public: bool, prefix: str | None, search: str | None,
                        order: str, limit: int, offset: int) -> tuple[list[tuple[str, int]], int]:
        conds = [T.owner.in_([owner, PUBLIC]) if include_public else T.owner == owner, T.missing == 0]
        for value, pattern in ((prefix, "{}%"), (search, "%{}%")):
            if value:
                conds.append(T.tag.ilike(pattern.format(like_escape(value.lower())), escape="\\")
                             if self.db.storable(value) else false())
        tags = select(T.tag).where(*conds).group_by(T.tag).subquery()
        total = await self.db.scalar(select(func.count()).select_from(tags))
        n = func.count().label("n")
        ordering = (T.tag.asc(),) if order == "name_asc" else (n.desc(), T.tag.asc())
        rows = await self.db.fetch_all(select(T.tag, n).where(*conds).group_by(T.tag).order_by(*ordering)
                                       .limit(limit).offset(offset))
        return [(r[0], r[1]) for r in rows], total

    async def by_name(self, owner: str, name: str) -> dict[str, Any] | None:
        """The visible asset named ``name``: the owner's own newest one, else the newest shared one."""
        row = await self.db.fetch_one(select(*items_table.c)
                                      .where(A.name == name, A.owner.in_([owner, PUBLIC]), A.missing == 0)
                                      .order_by(A.owner == PUBLIC, A.created_at.desc()).limit(1))
        return dict(zip(ITEM_NAMES, row, strict=True)) if row else None

    async def any_file_for_hash(self, content_hash: str) -> list[str]:
        rows = await self.db.fetch_all(select(A.file_path).where(A.hash == content_hash, A.file_path.is_not(None)))
        return [r[0] for r in rows]

    # --- seeding -----------------------------------------------------------

    async def seen_files(self) -> dict[str, tuple[int, float, str]]:
        """Every file the last scans hashed: ``{path: (size, mtime, hash)}``."""
        rows = await self.db.fetch_all(select(S.path, S.size, S.mtime, S.hash))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def seeded_files(self, present_only: bool = False) -> list[tuple[str, str, bool]]:
        """The shared assets backed by a file: ``(path, id, missing)``."""
        stmt = select(A.file_path, A.id, A.missing).where(A.owner == PUBLIC, A.file_path.is_not(None))
        if present_only:
            stmt = stmt.where(A.missing == 0)
        return [(r[0], r[1], bool(r[2])) for r in await self.db.fetch_all(stmt)]

    async def record_scan(self, contents: list[dict[str, Any]], new_assets: list[dict[str, Any]],
                          new_tags: list[dict[str, Any]], changed: list[dict[str, Any]],
                          seen: list[dict[str, Any]]) -> None:
        """Write one batch of a scan in one transaction, each row through a statement compiled once.

        ``contents`` are content rows (kept when known), ``new_assets`` and
        ``new_tags`` asset and tag rows, ``changed`` the ``aid``/``new_hash``/
        ``new_size``/``now`` of assets whose file changed (they are present
        again), ``seen`` the files' ``path``/``size``/``mtime``/``hash``.
        """
        async with self.db.transaction() as tx:
            for row in contents:
                await tx.execute(self._insert_content, row)
            for row in new_assets:
                await tx.execute(_INSERT_ITEM, row)
            for row in new_tags:
                await tx.execute(self._insert_tag, row)
            for row in changed:
                await tx.execute(_RESEEDED, row)
                await tx.execute(_TAGS_PRESENT, row)
            for row in seen:
                await tx.execute(self._upsert_seen, row)

    async def forget_files(self, gone: list[tuple[str, str]]) -> None:
        """Shared assets whose files are gone, as ``(id, path)``: mark them missing, forget the scans."""
        async with self.db.transaction() as tx:
            await self.set_missing([i for i, _ in gone], True, tx)
            for chunk in _chunks([p for _, p in gone]):
                await tx.execute(delete(seen_table).where(S.path.in_(chunk)))

    async def has_job_file(self, owner: str, job_id: str, path: str) -> bool:
        """Whether the output file ``path`` of job ``job_id`` already is an asset of ``owner``."""
        return await self.db.fetch_one(_HAS_JOB_FILE, {"owner": owner, "job": job_id, "path": path}) is not None

    # --- tasks ------------------------------------------------------------

    async def create_task(self, owner: str, task_name: str, payload: dict[str, Any],
                          idempotency_key: str | None = None) -> dict[str, Any]:
        now = time.time()
        task_id = str(uuid.uuid4())
        await self.db.execute(tasks_table.insert().values(
            id=task_id, owner=owner, task_name=task_name, idempotency_key=idempotency_key or task_id,
            payload=self.json(payload), status="created", create_time=now, update_time=now))
        return await self.get_task(task_id, owner)

    async def update_task(self, task_id: str, **fields: Any) -> None:
        values = {k: fields[k] for k in ("status", "error_message", "started_at", "completed_at") if k in fields}
        if "result" in fields:
            values["result"] = self.json(fields["result"])
        values["update_time"] = time.time()
        await self.db.execute(update(tasks_table).where(K.id == task_id).values(**values))

    async def set_task_payload(self, task_id: str, **fields: Any) -> None:
        """Set keys of a task's JSON payload (read, changed and written back in one transaction).

        The JSON is edited here rather than with the database's JSON functions,
        which SQLite and PostgreSQL spell differently.
        """
        async with self.db.transaction() as tx:
            raw = await tx.scalar(select(K.payload).where(K.id == task_id))
            if raw is None:
                return
            payload = {**orjson.loads(raw), **fields}
            await tx.execute(update(tasks_table).where(K.id == task_id)
                             .values(payload=self.json(payload)))

    async def get_task(self, task_id: str, owner: str) -> dict[str, Any] | None:
        if not self.db.storable(task_id):
            return None
        row = await self.db.fetch_one(select(*tasks_table.c).where(K.id == task_id, K.owner == owner))
        return _task(row) if row else None

    async def export_done(self, owner: str, export_name: str) -> bool:
        """Whether ``owner`` has a completed export task that wrote ``export_name``."""
        found = await self.db.fetch_one(select(K.id).where(
            K.owner == owner, K.task_name == "asset_export", K.status == "completed",
            json_text(self.db.kind, K.payload, "export_name") == export_name).limit(1))
        return found is not None

    async def list_tasks(self, owner: str, *, task_name: str | None, idempotency_key: str | None,
                         status: str | None, created_after: float | None, created_before: float | None,
                         newest_first: bool, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        conds = [K.owner == owner]
        for column, value in ((K.task_name, task_name), (K.idempotency_key, idempotency_key), (K.status, status)):
            if value:
                conds.append(column == value if self.db.storable(value) else false())
        if created_after is not None:
            conds.append(K.create_time > created_after)
        if created_before is not None:
            conds.append(K.create_time < created_before)
        total = await self.db.scalar(select(func.count()).select_from(tasks_table).where(*conds))
        ordering = K.create_time.desc() if newest_first else K.create_time.asc()
        rows = await self.db.fetch_all(select(*tasks_table.c).where(*conds).order_by(ordering)
                                       .limit(limit).offset(offset))
        return [_task(r) for r in rows], total

    async def fail_interrupted_tasks(self) -> int:
        """Tasks left ``created``/``running`` by a crash can never finish: mark them failed."""
        now = time.time()
        return await self.db.execute(update(tasks_table).where(K.status.in_(["created", "running"])).values(
            status="failed", error_message="interrupted by a server restart", update_time=now, completed_at=now))


def _task(row: Any) -> dict[str, Any]:
    record = dict(zip(TASK_NAMES, row, strict=True))
    record["payload"] = orjson.loads(record["payload"])
    record["result"] = orjson.loads(record["result"]) if record["result"] else None
    return record
