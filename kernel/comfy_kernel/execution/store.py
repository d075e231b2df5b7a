"""Durable queue and history in the kernel's database (SQLite in WAL mode, or PostgreSQL).

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
``extra_data`` keys are never written. The tables are created by the
kernel's migrations (``comfy_kernel.migrations``); the statements are
SQLAlchemy Core, run by ``comfy_kernel.storage``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    update,
)

from ..storage import Database, connect

SENSITIVE = ("auth_token_comfy_org", "api_key_comfy_org")

metadata = MetaData()
queue_table = Table(
    "ck_queue", metadata,
    Column("prompt_id", Text, primary_key=True), Column("owner", Text, nullable=False),
    Column("number", Double, nullable=False), Column("item", LargeBinary, nullable=False),
    Column("state", Text, nullable=False), Column("attempts", Integer, nullable=False),
    Column("created", Double, nullable=False), Column("started", Double),
)
history_table = Table(
    "ck_history", metadata,
    Column("seq", Integer, primary_key=True), Column("prompt_id", Text, nullable=False),
    Column("owner", Text, nullable=False), Column("status", Text, nullable=False),
    Column("entry", LargeBinary, nullable=False), Column("created", Double), Column("started", Double),
    Column("ended", Double), Column("outputs_count", Integer, nullable=False),
)
Q, H = queue_table.c, history_table.c

_MARK_RUNNING = (update(queue_table).where(Q.prompt_id == bindparam("pid"))
                 .values(state="running", attempts=Q.attempts + 1, started=bindparam("now")))
_DEQUEUE = delete(queue_table).where(Q.prompt_id == bindparam("pid"))
_UNHISTORY = delete(history_table).where(H.prompt_id == bindparam("pid"))
_HISTORY_VALUES = dict(
    prompt_id=bindparam("pid"), owner=bindparam("owner"), status=bindparam("status"), entry=bindparam("entry"),
    created=bindparam("created"), started=bindparam("started"), ended=bindparam("ended"),
    outputs_count=bindparam("count"))
_INSERT_HISTORY = history_table.insert().values(**_HISTORY_VALUES)
_COUNT_HISTORY = select(func.count()).select_from(history_table)
_TRIM_HISTORY = delete(history_table).where(
    H.seq.in_(select(H.seq).order_by(H.seq).limit(bindparam("n")).scalar_subquery()))
_HISTORY_ENTRY = select(H.entry).where(H.owner == bindparam("owner"), H.prompt_id == bindparam("pid"))


def strip_sensitive(extra_data: dict[str, Any]) -> dict[str, Any]:
    if any(k in extra_data for k in SENSITIVE):
        return {k: v for k, v in extra_data.items() if k not in SENSITIVE}
    return extra_data


def public_item(item: list[Any]) -> list[Any]:
    """A queue item as clients see it: sensitive extra_data keys removed."""
    return [item[0], item[1], item[2], strip_sensitive(item[3]), item[4]]


class Store:
    """The queue and history tables of one database (see ``comfy_kernel.storage`` for how each back-end runs them).

    The three small writes every prompt makes (enqueue, mark running, move to
    history) are statements compiled once; on SQLite they run on the server
    loop and are most of a trivial prompt's fixed cost.
    """

    def __init__(self, target: str | Database, history_max_items: int = 10000):
        self.db: Database = connect(target) if isinstance(target, str) else target
        self.owns_db = isinstance(target, str)  # opened and closed here (tests, tools), else by the kernel
        self.path: str | None = getattr(self.db, "path", None)
        self.history_max_items = history_max_items
        self._history_rows: int | None = None  # rows in ck_history, when known (see _trim)
        insert = self.db.insert(queue_table)
        self._enqueue = insert.values(
            prompt_id=bindparam("pid"), owner=bindparam("owner"), number=bindparam("number"),
            item=bindparam("item"), state="pending", attempts=0, created=bindparam("now"),
        ).on_conflict_do_update(index_elements=["prompt_id"], set_={
            "owner": insert.excluded.owner, "number": insert.excluded.number, "item": insert.excluded.item,
            "state": "pending", "attempts": 0, "created": insert.excluded.created, "started": None})
        # A prompt id finished again (a client may choose ids) replaces its row, which then comes last:
        # inserted when new (one statement, the usual case), else deleted and inserted again.
        self._add_history = (self.db.insert(history_table).values(**_HISTORY_VALUES)
                             .on_conflict_do_nothing(index_elements=["prompt_id"]))

    async def open(self) -> None:
        if self.owns_db:
            from ..migrations import KERNEL
            from ..storage import upgrade

            await self.db.open()
            await upgrade(self.db, [KERNEL])
        for stmt in (self._enqueue, self._add_history, _MARK_RUNNING, _DEQUEUE, _UNHISTORY, _INSERT_HISTORY,
                     _COUNT_HISTORY, _TRIM_HISTORY, _HISTORY_ENTRY):
            self.db.prepare(stmt)

    async def close(self) -> None:
        if self.owns_db:
            await self.db.close()

    # -- queue -----------------------------------------------------------------------------

    async def enqueue(self, owner: str, item: list[Any]) -> bytes:
        """Store a queue item; returns its JSON, which :meth:`finish` can reuse for the history row."""
        blob = orjson.dumps(public_item(item), option=orjson.OPT_NON_STR_KEYS)
        await self.db.execute(self._enqueue, {"pid": item[1], "owner": owner, "number": float(item[0]),
                                              "item": blob, "now": time.time()})
        return blob

    async def mark_running(self, prompt_id: str) -> None:
        await self.db.execute(_MARK_RUNNING, {"now": time.time(), "pid": prompt_id})

    async def delete_pending(self, prompt_ids: list[str] | None, owner: str | None) -> int:
        stmt = delete(queue_table).where(Q.state == "pending")
        if prompt_ids is not None:
            stmt = stmt.where(Q.prompt_id.in_([p for p in prompt_ids if self.db.storable(p)]))
        if owner is not None:
            stmt = stmt.where(Q.owner == owner)
        return await self.db.execute(stmt)

    async def recover(self) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any], float | None]]]:
        """After a restart: (pending rows to run, running rows that died twice → fail)."""
        requeue, failed = [], []
        rows = await self.db.fetch_all(select(Q.owner, Q.item, Q.state, Q.attempts, Q.started)
                                       .order_by(Q.number, Q.prompt_id))
        for owner, blob, state, attempts, started in rows:
            item = orjson.loads(blob)
            if state == "running" and attempts >= 2:
                failed.append((owner, item, started))
            else:
                requeue.append((owner, item))
        await self.db.execute(update(queue_table).where(Q.state == "running", Q.attempts < 2)
                              .values(state="pending"))
        return requeue, failed

    # -- history ---------------------------------------------------------------------------------

    async def finish(self, owner: str, item: list[Any], result: dict[str, Any], started: float | None,
                     ended: float, created: float | None = None, item_blob: bytes | None = None) -> None:
        """Move a prompt from the queue into history in one transaction.

        ``item_blob`` is the item's JSON from :meth:`enqueue`: the prompt (often
        with the whole UI workflow in ``extra_pnginfo``) is not encoded twice.
        """
        prompt: Any = orjson.Fragment(item_blob) if item_blob is not None else public_item(item)
        entry = {"prompt": prompt, "outputs": result["outputs"], "status": result["status"],
                 "meta": result["meta"]}
        blob = orjson.dumps(entry, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
                            default=_json_default)
        count = sum(len(v) for o in result["outputs"].values() if isinstance(o, dict)
                    for v in o.values() if isinstance(v, list))
        keep = self.history_max_items
        pid = item[1]
        row = {"pid": pid, "owner": owner, "status": result["status"]["status_str"], "entry": blob,
               "created": created, "started": started, "ended": ended, "count": count}
        try:
            async with self.db.transaction() as tx:
                await tx.execute(_DEQUEUE, {"pid": pid})
                if not await tx.execute(self._add_history, row):
                    await tx.execute(_UNHISTORY, {"pid": pid})
                    await tx.execute(_INSERT_HISTORY, row)
                rows = await self._trim(tx, keep) if keep > 0 else None
        except BaseException:
            self._history_rows = None
            raise
        self._history_rows = rows

    async def _trim(self, tx: Any, keep: int) -> int:
        """Keep the newest ``keep`` history rows; returns how many there are now.

        The row count is tracked, so a prompt pays a COUNT only when the bound
        may be exceeded, and the oldest rows are found from the front of the
        table. (Looking ``keep`` rows back from the newest one on every insert
        cost about 10 ms per prompt with a full 10,000-row history.)
        """
        known = self._history_rows
        if known is not None and known + 1 <= keep:
            return known + 1
        rows = await tx.scalar(_COUNT_HISTORY)
        if rows > keep:
            await tx.execute(_TRIM_HISTORY, {"n": rows - keep})
            rows = keep
        return rows

    async def history(self, owner: str, max_items: int | None, offset: int) -> list[tuple[str, bytes]]:
        if max_items is not None and max_items < 0:  # no bound, as SQLite reads a negative LIMIT
            max_items = None
        if offset < 0 and max_items is not None:
            total = await self.db.scalar(select(func.count()).select_from(history_table).where(H.owner == owner))
            offset = max(total - max_items, 0)
        stmt = select(H.prompt_id, H.entry).where(H.owner == owner).order_by(H.seq).offset(max(offset, 0))
        if max_items is not None:
            stmt = stmt.limit(max_items)
        return [(r[0], _bytes(r[1])) for r in await self.db.fetch_all(stmt)]

    async def history_entry(self, owner: str, prompt_id: str) -> bytes | None:
        if not self.db.storable(prompt_id):
            return None
        row = await self.db.fetch_one(_HISTORY_ENTRY, {"owner": owner, "pid": prompt_id})
        return _bytes(row[0]) if row else None

    async def history_rows(self, owner: str) -> list[tuple]:
        rows = await self.db.fetch_all(select(H.prompt_id, H.status, H.entry, H.created, H.started, H.ended,
                                              H.outputs_count).where(H.owner == owner).order_by(H.seq))
        return [(r[0], r[1], _bytes(r[2]), *r[3:]) for r in rows]

    async def history_record(self, owner: str, prompt_id: str) -> tuple[bytes, float | None, float | None,
                                                                      float | None] | None:
        """One finished prompt's entry with its created, started and ended times (Unix seconds)."""
        if not self.db.storable(prompt_id):
            return None
        row = await self.db.fetch_one(select(H.entry, H.created, H.started, H.ended)
                                      .where(H.owner == owner, H.prompt_id == prompt_id))
        return (_bytes(row[0]), row[1], row[2], row[3]) if row else None

    async def delete_history(self, owner: str, prompt_ids: list[str] | None) -> None:
        self._history_rows = None
        stmt = delete(history_table).where(H.owner == owner)
        if prompt_ids is not None:
            stmt = stmt.where(H.prompt_id.in_([p for p in prompt_ids if self.db.storable(p)]))
        await self.db.execute(stmt)
        self._history_rows = None


def _bytes(value: Any) -> bytes:
    """A BLOB as bytes (asyncpg may hand back a memoryview-like value)."""
    return value if isinstance(value, bytes) else bytes(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
