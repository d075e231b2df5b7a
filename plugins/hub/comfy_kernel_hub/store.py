"""The hub's tables in the kernel's database (SQLite or PostgreSQL), all prefixed ``hub_``.

The tables are declared here with SQLAlchemy Core and created by the hub's
migrations (:mod:`.migrations`); every statement runs through
``kernel.database``. Read-modify-write sequences run in one transaction
that first locks what they depend on (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite a write transaction is exclusive from its start), so
two requests, or two servers on one database, can never both append
"version N+1".

A read that must see a write committed moments ago (what a request just
wrote, or the row a concurrent request created first) runs in a transaction
(``fresh=True``, or inside the writing one): on SQLite ``kernel.database``
reads through one shared connection, which can answer from an older
snapshot while another read is in flight on it.

Workflow versions and published snapshots are insert-only: no statement in
this module updates or deletes a row of ``hub_versions`` or
``hub_snapshots``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
    update,
)

from comfy_kernel.storage import Database, Transaction

metadata = MetaData()
workflows = Table(
    "hub_workflows", metadata,
    Column("id", Text, primary_key=True), Column("owner", Text), Column("created_by", Text), Column("name", Text),
    Column("description", Text), Column("default_view", Text), Column("latest_version", Integer),
    Column("forked_from_workflow_id", Text), Column("forked_from_version_id", Text), Column("source_file", Text),
    Column("created_at", Double), Column("updated_at", Double), Column("deleted_at", Double),
)
versions = Table(
    "hub_versions", metadata,
    Column("id", Text, primary_key=True), Column("workflow_id", Text, ForeignKey("hub_workflows.id")),
    Column("version", Integer), Column("workflow_json", Text), Column("created_by", Text),
    Column("created_at", Double),
)
shares = Table(
    "hub_shares", metadata,
    Column("share_id", Text, primary_key=True), Column("workflow_id", Text), Column("owner", Text),
    Column("listed", Integer), Column("profile_username", Text), Column("status", Text), Column("hub_fields", Text),
    Column("unpublished_at", Double),
)
snapshots = Table(
    "hub_snapshots", metadata,
    Column("id", Text, primary_key=True), Column("share_id", Text, ForeignKey("hub_shares.share_id")),
    Column("seq", Integer), Column("version_id", Text), Column("name", Text), Column("workflow_json", Text),
    Column("assets", Text), Column("publish_time", Double),
)
profiles = Table(
    "hub_profiles", metadata,
    Column("username", Text, primary_key=True), Column("owner", Text), Column("display_name", Text),
    Column("description", Text), Column("avatar_url", Text), Column("website_urls", Text), Column("created_at", Double),
)
labels = Table(
    "hub_labels", metadata,
    Column("type", Text, primary_key=True), Column("name", Text, primary_key=True), Column("display_name", Text),
    Column("description", Text),
)
uploads = Table(
    "hub_uploads", metadata,
    Column("token", Text, primary_key=True), Column("owner", Text), Column("filename", Text),
    Column("content_type", Text), Column("stored_name", Text), Column("expires_at", Double),
    Column("uploaded_at", Double), Column("claimed_at", Double),
)
feedback = Table(
    "hub_feedback", metadata,
    Column("id", Text, primary_key=True), Column("owner", Text), Column("type", Text), Column("content", Text),
    Column("rating", Integer), Column("metadata", Text), Column("created_at", Double),
)
WF, V, S, N, P = workflows.c, versions.c, shares.c, snapshots.c, profiles.c

Record = dict[str, Any]


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



def folded_contains(column: Any, text: str) -> Any:
    """``column`` contains ``text``, ignoring case as the database's ``lower()`` does, wildcards taken literally."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return func.lower(column).like(func.lower(pattern), escape="\\")


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a broken unique constraint from either back-end's driver (sqlite3, asyncpg)."""
    return any(c.__name__ in ("IntegrityError", "IntegrityConstraintViolationError") for c in type(exc).__mro__)


def _names(stmt: Any) -> list[str]:
    return list(stmt.selected_columns.keys())


_NEWER = snapshots.alias("newer")
_LATEST_SEQ = select(func.max(_NEWER.c.seq)).where(_NEWER.c.share_id == S.share_id).scalar_subquery()
_SHARES = (select(shares, N.name, N.workflow_json, N.assets, N.publish_time, N.version_id, N.seq)
           .select_from(shares.join(snapshots, N.share_id == S.share_id)).where(N.seq == _LATEST_SEQ))
"""Each share with its newest snapshot."""

_SORT = {"create_time": WF.created_at, "update_time": WF.updated_at, "name": func.lower(WF.name)}


class HubStore:
    """All database access of the plugin, through ``kernel.database``."""

    def __init__(self, db: Database, content_dir: str = ""):
        self.db = db
        #: Where copies of published private asset content live (see ``publishing.keep_content``).
        self.content_dir = content_dir
        self._add_label = self.db.insert(labels).values(
            type=bindparam("type"), name=bindparam("name"), display_name=bindparam("display_name"),
        ).on_conflict_do_nothing(index_elements=["type", "name"])

    async def open(self) -> None:
        """Nothing to open: the kernel opens ``kernel.database`` and runs the hub's migrations before start-up."""
        self.db.prepare(self._add_label)

    async def close(self) -> None:
        return None

    def transaction(self) -> Any:
        """``async with store.transaction() as tx``: statements on ``tx`` commit together or not at all."""
        return self.db.transaction()

    async def one(self, stmt: Any, tx: Transaction | None = None, *, fresh: bool = False) -> Record | None:
        """The first row as a dict; ``fresh``: read in a transaction, which sees every committed write."""
        if fresh and tx is None:
            async with self.db.transaction() as own:
                return await self.one(stmt, own)
        row = await (tx or self.db).fetch_one(stmt)
        return dict(zip(_names(stmt), row, strict=True)) if row is not None else None

    async def all(self, stmt: Any, tx: Transaction | None = None) -> list[Record]:
        names = _names(stmt)
        return [dict(zip(names, row, strict=True)) for row in await (tx or self.db).fetch_all(stmt)]

    # --- workflows and versions --------------------------------------------

    async def create_workflow(self, *, owner: str, created_by: str, name: str, description: str,
                              default_view: str, workflow_json: dict[str, Any],
                              forked_from: tuple[str, str] | None = None,
                              source_file: str | None = None) -> dict[str, Any]:
        now = time.time()
        wf_id, version_id = new_id(), new_id()
        async with self.db.transaction() as tx:
            await tx.execute(workflows.insert().values(
                id=wf_id, owner=owner, created_by=created_by, name=name, description=description,
                default_view=default_view, latest_version=1,
                forked_from_workflow_id=forked_from[0] if forked_from else None,
                forked_from_version_id=forked_from[1] if forked_from else None,
                source_file=source_file, created_at=now, updated_at=now))
            await tx.execute(versions.insert().values(id=version_id, workflow_id=wf_id, version=1,
                                                      workflow_json=dump(workflow_json), created_by=created_by,
                                                      created_at=now))
            return await self.one(select(workflows).where(WF.id == wf_id), tx)

    async def get_workflow(self, wf_id: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return await self.one(select(workflows).where(WF.id == wf_id, WF.deleted_at.is_(None)), fresh=fresh)

    async def workflow_for_file(self, owner: str, source_file: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return await self.one(select(workflows).where(WF.owner == owner, WF.source_file == source_file,
                                                      WF.deleted_at.is_(None)), fresh=fresh)

    async def list_workflows(self, owner: str, *, name: str | None, default_view: str | None, sort: str,
                             order: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where = [WF.owner == owner, WF.deleted_at.is_(None)]
        if name:
            where.append(folded_contains(WF.name, name))
        if default_view:
            where.append(WF.default_view == default_view)
        total = await self.db.scalar(select(func.count()).select_from(workflows).where(*where))
        column = _SORT[sort]
        keys = (column.asc(), WF.id.asc()) if order == "asc" else (column.desc(), WF.id.desc())
        rows = await self.all(select(workflows).where(*where).order_by(*keys).limit(limit).offset(offset))
        return rows, int(total or 0)

    async def update_workflow(self, wf_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        allowed = {k: v for k, v in fields.items() if k in ("name", "description", "default_view")}
        live = (WF.id == wf_id, WF.deleted_at.is_(None))
        async with self.db.transaction() as tx:
            await tx.execute(update(workflows).where(*live).values(**allowed, updated_at=time.time()))
            return await self.one(select(workflows).where(*live), tx)

    async def delete_workflow(self, wf_id: str) -> None:
        """Soft delete (the seed's wording): versions stay for forks that point at them."""
        await self.db.execute(update(workflows).where(WF.id == wf_id).values(deleted_at=time.time()))

    async def get_version(self, wf_id: str, version: int | None = None, *, fresh: bool = False
                          ) -> dict[str, Any] | None:
        if version is None:
            return await self.one(select(versions).select_from(versions.join(workflows, WF.id == V.workflow_id))
                                  .where(V.workflow_id == wf_id, V.version == WF.latest_version), fresh=fresh)
        return await self.one(select(versions).where(V.workflow_id == wf_id, V.version == version), fresh=fresh)

    async def add_version(self, wf_id: str, base_version: int | None, workflow_json: dict[str, Any],
                          created_by: str) -> dict[str, Any]:
        """Append ``latest + 1`` if ``base_version`` is the latest (None: no check, for file re-publishes).

        The check and the insert happen in one transaction that locks the
        workflow's row first, so a second writer on the same base waits, then
        sees the new latest and gets :class:`VersionConflict`; nothing is
        overwritten.
        """
        now = time.time()
        async with self.db.transaction() as tx:
            current = await tx.scalar(select(WF.latest_version).where(WF.id == wf_id, WF.deleted_at.is_(None))
                                      .with_for_update())
            if current is None:
                raise KeyError(wf_id)
            if base_version is not None and base_version != current:
                raise VersionConflict(current)
            version_id = new_id()
            await tx.execute(versions.insert().values(id=version_id, workflow_id=wf_id, version=current + 1,
                                                      workflow_json=dump(workflow_json), created_by=created_by,
                                                      created_at=now))
            await tx.execute(update(workflows).where(WF.id == wf_id).values(latest_version=current + 1,
                                                                             updated_at=now))
        return {"id": version_id, "version": current + 1, "latest_version": current + 1, "created_by": created_by,
                "created_at": now}

    # --- shares and snapshots ------------------------------------------------

    async def publish(self, *, workflow: dict[str, Any], version: dict[str, Any], name: str,
                      assets: list[dict[str, Any]], listed: bool | None = None,
                      profile_username: str | None = None, hub_fields: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """Add an immutable snapshot under the workflow's share id (created on first publish)."""
        now = time.time()
        async with self.db.transaction() as tx:
            # Publishes of one workflow take turns: one creates the share, the next numbers after it.
            await tx.fetch_one(select(WF.id).where(WF.id == workflow["id"]).with_for_update())
            share_id = await tx.scalar(select(S.share_id).where(S.workflow_id == workflow["id"]))
            if share_id is None:
                share_id = new_share_id()
                await tx.execute(shares.insert().values(share_id=share_id, workflow_id=workflow["id"],
                                                        owner=workflow["owner"]))
                seq = 1
            else:
                seq = (await tx.scalar(select(func.max(N.seq)).where(N.share_id == share_id)) or 0) + 1
            updates: dict[str, Any] = {"unpublished_at": None}
            if listed is not None:
                updates["listed"] = int(listed)
            if profile_username is not None:
                updates["profile_username"] = profile_username
            if hub_fields is not None:
                updates["hub_fields"] = dump(hub_fields)
            await tx.execute(update(shares).where(S.share_id == share_id).values(**updates))
            await tx.execute(snapshots.insert().values(
                id=new_id(), share_id=share_id, seq=seq, version_id=version["id"], name=name,
                workflow_json=version["workflow_json"], assets=dump(assets), publish_time=now))
            return await self.one(_SHARES.where(S.share_id == share_id), tx)

    async def share(self, share_id: str, *, include_unpublished: bool = False) -> dict[str, Any] | None:
        """The share joined with its newest snapshot."""
        stmt = _SHARES.where(S.share_id == share_id)
        if not include_unpublished:
            stmt = stmt.where(S.unpublished_at.is_(None))
        return await self.one(stmt)

    async def share_of_workflow(self, wf_id: str) -> dict[str, Any] | None:
        share_id = await self.db.scalar(select(S.share_id).where(S.workflow_id == wf_id))
        return await self.share(share_id, include_unpublished=True) if share_id is not None else None

    async def snapshots(self, share_id: str) -> list[dict[str, Any]]:
        return await self.all(select(snapshots).where(N.share_id == share_id).order_by(N.seq))

    async def unpublish(self, share_id: str) -> None:
        await self.db.execute(update(shares).where(S.share_id == share_id)
                              .values(unpublished_at=time.time(), listed=0))

    async def listed_shares(self, *, statuses: list[str], search: str | None, tag: str | None,
                            username: str | None) -> list[dict[str, Any]]:
        """Every listed share matching the filters, newest first (the caller pages)."""
        stmt = _SHARES.where(S.unpublished_at.is_(None), S.listed == 1)
        if statuses:
            stmt = stmt.where(S.status.in_(statuses))
        if search:
            stmt = stmt.where(folded_contains(N.name, search))
        if username:
            stmt = stmt.where(S.profile_username == username)
        rows = await self.all(stmt.order_by(N.publish_time.desc(), S.share_id.desc()))
        if tag:
            rows = [r for r in rows if tag in (load(r["hub_fields"], {}).get("tags") or [])]
        return rows

    # --- profiles, labels, feedback --------------------------------------------

    async def profile_by_name(self, username: str) -> dict[str, Any] | None:
        return await self.one(select(profiles).where(P.username == username))

    async def profile_of(self, owner: str) -> dict[str, Any] | None:
        return await self.one(select(profiles).where(P.owner == owner))

    async def add_profile(self, row: Mapping[str, Any]) -> str | None:
        """Create a hub profile; returns ``"owner"`` or ``"username"`` instead when that one is taken."""

        async def taken(tx: Any) -> str | None:
            for field in ("owner", "username"):
                if await tx.fetch_one(select(P.username).where(P[field] == row[field])) is not None:
                    return field
            return None

        try:
            async with self.db.transaction() as tx:
                found = await taken(tx)
                if found is None:
                    await tx.execute(profiles.insert().values(**row))
                return found
        except Exception as exc:  # PostgreSQL: a concurrent request inserted one of them first
            if not is_conflict(exc):
                raise
            found = await taken(self.db)
            if found is None:
                raise
            return found

    async def update_profile(self, username: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Change a profile's fields; returns the profile as it is now."""
        async with self.db.transaction() as tx:
            if fields:
                await tx.execute(update(profiles).where(P.username == username).values(**fields))
            return await self.one(select(profiles).where(P.username == username), tx)

    async def seed_labels(self, rows: list[tuple[str, str, str]]) -> None:
        """Add labels a fresh server offers, keeping those already there."""
        await self.db.execute_many(self._add_label, [{"type": t, "name": n, "display_name": d} for t, n, d in rows])

    async def labels(self, kind: str | None = None) -> list[dict[str, Any]]:
        stmt = select(labels)
        if kind:
            stmt = stmt.where(labels.c.type == kind)
        return await self.all(stmt.order_by(labels.c.type, labels.c.name))

    async def add_feedback(self, row: Mapping[str, Any]) -> None:
        await self.db.execute(feedback.insert().values(**row))

    # --- media uploads -----------------------------------------------------------

    async def add_upload(self, row: Mapping[str, Any]) -> None:
        await self.db.execute(uploads.insert().values(**row))

    async def upload(self, token: str) -> dict[str, Any] | None:
        return await self.one(select(uploads).where(uploads.c.token == token))

    async def claim_upload(self, tx: Transaction, token: str) -> bool:
        """Mark the upload URL used inside ``tx``; False when it already was."""
        claimed = await tx.execute(update(uploads).where(uploads.c.token == token, uploads.c.uploaded_at.is_(None))
                                   .values(uploaded_at=time.time()))
        return claimed == 1
