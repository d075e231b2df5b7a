"""The manager's tables in the kernel's database (SQLite or PostgreSQL): the task queue and what it remembers.

* ``manager_tasks``: one row per queued task, in queue order (``id``), with
  its status (``pending``, ``running``, ``done``, ``failed``) and result.
* ``manager_meta``: small flags, such as whether the queue was processing
  (so a restart resumes it).
* ``manager_batches``: each finished worker run, as Manager 4's history record.

The tables are created by the plugin's migrations (``migrations/``); the
statements are SQLAlchemy Core, run by ``kernel.database``. Items, results
and records are JSON text.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Column, Double, Integer, MetaData, Table, Text, delete, func, select, update

from comfy_kernel.storage import Database

metadata = MetaData()
tasks_table = Table(
    "manager_tasks", metadata,
    Column("id", Integer, primary_key=True), Column("kind", Text), Column("item", Text), Column("status", Text),
    Column("result", Text), Column("created", Double), Column("finished", Double),
)
meta_table = Table("manager_meta", metadata, Column("key", Text, primary_key=True), Column("value", Text))
batches_table = Table(
    "manager_batches", metadata,
    Column("id", Text, primary_key=True), Column("started", Double), Column("finished", Double),
    Column("record", Text),
)
T, M, B = tasks_table.c, meta_table.c, batches_table.c

TaskRow = tuple[int, str, dict[str, Any], str, dict[str, Any] | None, float | None]
"""``(id, kind, item, status, result, finished)``."""


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


class QueueStore:
    """Every statement of the task queue (``queue.TaskQueue`` holds the worker and the views)."""

    def __init__(self, db: Database):
        self.db = db

    async def requeue_running(self) -> None:
        """After a restart, a task that was running goes back to pending (it runs again)."""
        await self.db.execute(update(tasks_table).where(T.status == "running").values(status="pending"))

    async def meta(self, key: str) -> str | None:
        return await self.db.scalar(select(M.value).where(M.key == key))

    async def set_meta(self, key: str, value: str) -> None:
        insert = self.db.insert(meta_table).values(key=key, value=value)
        await self.db.execute(insert.on_conflict_do_update(index_elements=["key"],
                                                           set_={"value": insert.excluded.value}))

    async def count(self, *statuses: str) -> int:
        found = await self.db.scalar(select(func.count()).select_from(tasks_table).where(T.status.in_(statuses)))
        return int(found or 0)

    async def add(self, kind: str, item: dict[str, Any]) -> int:
        """Queue a task; returns its id (the queue position)."""
        async with self.db.transaction() as tx:
            task_id = await tx.scalar(tasks_table.insert().values(
                kind=kind, item=json.dumps(item), status="pending", created=time.time()).returning(T.id))
        return int(task_id)

    async def reset(self) -> None:
        """Drop pending and finished tasks (a running one finishes)."""
        await self.db.execute(delete(tasks_table).where(T.status != "running"))

    async def drop_pending(self) -> int:
        return await self.db.execute(delete(tasks_table).where(T.status == "pending"))

    async def tasks(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(select(T.id, T.kind, T.item, T.status, T.result).order_by(T.id))
        return [{"id": r[0], "kind": r[1], "item": json.loads(r[2]), "status": r[3], "result": _loads(r[4])}
                for r in rows]

    async def queued(self) -> list[TaskRow]:
        """Running and pending tasks, in queue order."""
        return await self._rows(select(*tasks_table.c).where(T.status.in_(["running", "pending"])).order_by(T.id))

    async def finished(self, since: float) -> list[TaskRow]:
        """Tasks finished since ``since``, oldest first."""
        return await self._rows(select(*tasks_table.c).where(T.status.in_(["done", "failed"]), T.finished >= since)
                                .order_by(T.finished, T.id))

    async def _rows(self, stmt: Any) -> list[TaskRow]:
        return [(r[0], r[1], json.loads(r[2]), r[3], _loads(r[4]), r[6]) for r in await self.db.fetch_all(stmt)]

    async def take_next(self) -> tuple[int, str, dict[str, Any]] | None:
        """The oldest pending task, marked running in the same transaction; None when none is pending."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(select(T.id, T.kind, T.item).where(T.status == "pending").order_by(T.id).limit(1))
            if row is None:
                return None
            await tx.execute(update(tasks_table).where(T.id == row[0]).values(status="running"))
        return row[0], row[1], json.loads(row[2])

    async def finish(self, task_id: int, status: str, result: dict[str, Any], finished: float) -> None:
        await self.db.execute(update(tasks_table).where(T.id == task_id).values(
            status=status, result=json.dumps(result, default=str), finished=finished))

    async def save_batch(self, batch_id: str, started: float, finished: float, record: dict[str, Any]) -> None:
        insert = self.db.insert(batches_table).values(id=batch_id, started=started, finished=finished,
                                                      record=json.dumps(record, default=str))
        await self.db.execute(insert.on_conflict_do_update(index_elements=["id"], set_={
            "started": insert.excluded.started, "finished": insert.excluded.finished,
            "record": insert.excluded.record}))

    async def batch_ids(self) -> list[str]:
        return [r[0] for r in await self.db.fetch_all(select(B.id).order_by(B.finished.desc()))]

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        return _loads(await self.db.scalar(select(B.record).where(B.id == batch_id)))
