"""Who runs a prompt now: a lease per prompt, next to the kernel's queue table.

JetStream redelivers a message whose worker stopped acknowledging it, but it
cannot tell a dead worker from one that lost NATS for a while; the lease can.
A worker takes a prompt only when no other worker renewed its lease within
``lease`` seconds, and it takes it in the same transaction that marks the
queue row running (``attempts + 1``), so the single-process rule carries
over: a prompt whose worker died while running it twice is recorded as
failed instead of being run a third time.

The table ``ck_cluster_claims`` lives in the kernel's database (SQLite for
processes on one host, PostgreSQL for a real cluster) and is created by the
plugin's migrations. Two workers may try to take one prompt at the same
moment (a redelivery racing a slow worker); the claim first locks the
prompt's queue row (``SELECT ... FOR UPDATE``; SQLite has a single writer),
so the second reads the first's lease only once the first has committed.
Renewing and releasing are single statements that touch only the caller's
own lease.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import Column, Double, MetaData, Table, Text, bindparam, delete, or_, select, update

from comfy_kernel.execution.store import queue_table
from comfy_kernel.storage import Database

RUN, GONE, HELD, DEAD_TWICE = "run", "gone", "held", "dead-twice"

metadata = MetaData()
claims_table = Table(
    "ck_cluster_claims", metadata,
    Column("prompt_id", Text, primary_key=True), Column("worker", Text, nullable=False),
    Column("beat", Double, nullable=False),
)
C, Q = claims_table.c, queue_table.c

_QUEUE_ROW = (select(Q.owner, Q.item, Q.state, Q.attempts, Q.created, Q.started)
              .where(Q.prompt_id == bindparam("pid")).with_for_update())
_LEASE = select(C.worker, C.beat).where(C.prompt_id == bindparam("pid"))
_FORGET = delete(claims_table).where(C.prompt_id == bindparam("pid"))
_MARK_RUNNING = (update(queue_table).where(Q.prompt_id == bindparam("pid"))
                 .values(state="running", attempts=Q.attempts + 1, started=bindparam("now")))
_RENEW = (update(claims_table).where(C.prompt_id == bindparam("pid"), C.worker == bindparam("me"))
          .values(beat=bindparam("now")))
_RELEASE = delete(claims_table).where(C.prompt_id == bindparam("pid"), C.worker == bindparam("me"))
_QUEUE_ROWS = select(Q.owner, Q.item, Q.state, Q.created).order_by(Q.number, Q.prompt_id)
_STALE = (select(Q.owner, Q.item).select_from(queue_table.outerjoin(claims_table, C.prompt_id == Q.prompt_id))
          .where(or_(Q.state == "pending", C.beat.is_(None), C.beat < bindparam("expired")))
          .order_by(Q.number, Q.prompt_id))


class Claims:
    """The leases of one process (a worker, or ``"front-end"`` which only reads) in ``db``."""

    def __init__(self, db: Database, worker_id: str, lease: float):
        self.db = db
        self.worker_id = worker_id
        self.lease = lease
        insert = db.insert(claims_table)
        self._take = insert.values(prompt_id=bindparam("pid"), worker=bindparam("me"), beat=bindparam("now")) \
            .on_conflict_do_update(index_elements=["prompt_id"],
                                   set_={"worker": insert.excluded.worker, "beat": insert.excluded.beat})

    async def open(self) -> None:
        for stmt in (_QUEUE_ROW, _LEASE, _FORGET, _MARK_RUNNING, _RENEW, _RELEASE, _QUEUE_ROWS, _STALE, self._take):
            self.db.prepare(stmt)

    async def close(self) -> None:
        return None

    async def claim(self, prompt_id: str) -> tuple[str, dict[str, Any] | None]:
        """Try to take ``prompt_id``: (RUN, row), or GONE / HELD / DEAD_TWICE with the row if any."""
        now = time.time()
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(_QUEUE_ROW, {"pid": prompt_id})
            if row is None:
                await tx.execute(_FORGET, {"pid": prompt_id})
                return GONE, None
            owner, blob, state, attempts, created, started = row
            info = {"owner": owner, "item": orjson.loads(blob), "state": state, "attempts": attempts,
                    "created": created, "started": started}
            held = await tx.fetch_one(_LEASE, {"pid": prompt_id})
            if held is not None and held[0] != self.worker_id and now - held[1] < self.lease:
                return HELD, info
            if state == "running" and attempts >= 2:
                return DEAD_TWICE, info
            await tx.execute(_MARK_RUNNING, {"pid": prompt_id, "now": now})
            await tx.execute(self._take, {"pid": prompt_id, "me": self.worker_id, "now": now})
        info["started"] = now
        return RUN, info

    async def renew(self, prompt_id: str) -> None:
        await self.db.execute(_RENEW, {"pid": prompt_id, "me": self.worker_id, "now": time.time()})

    async def release(self, prompt_id: str) -> None:
        await self.db.execute(_RELEASE, {"pid": prompt_id, "me": self.worker_id})

    async def queue_rows(self) -> list[tuple[str, bytes, str, float]]:
        """Every queue row (owner, item, state, created), in queue order: what the front-ends show."""
        return [(r[0], bytes(r[1]), r[2], r[3]) for r in await self.db.fetch_all(_QUEUE_ROWS)]

    async def stale(self) -> list[tuple[str, bytes]]:
        """Rows no worker holds: pending ones, and running ones whose lease ran out (to publish again)."""
        rows = await self.db.fetch_all(_STALE, {"expired": time.time() - self.lease})
        return [(r[0], bytes(r[1])) for r in rows]
