"""Webhook state in the kernel's database, so nothing is lost or sent twice across restarts.

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
    delete,
    func,
    select,
    update,
)

from ..storage import Database

metadata = MetaData()
endpoints = Table(
    "ck_webhook_endpoints", metadata,
    Column("id", Text, primary_key=True), Column("owner", Text), Column("url", Text), Column("events", Text),
    Column("secret", Text), Column("description", Text), Column("enabled", Integer), Column("created", Double),
    Column("updated", Double),
)
secrets = Table("ck_webhook_secrets", metadata, Column("owner", Text, primary_key=True), Column("secret", Text),
                Column("created", Double))
jobs = Table(
    "ck_webhook_jobs", metadata,
    Column("prompt_id", Text, primary_key=True), Column("owner", Text), Column("targets", Text),
    Column("base_url", Text), Column("final_queued", Integer), Column("created", Double),
)
deliveries = Table(
    "ck_webhook_deliveries", metadata,
    Column("id", Text, primary_key=True), Column("prompt_id", Text), Column("owner", Text), Column("event", Text),
    Column("url", Text), Column("endpoint_id", Text), Column("payload", LargeBinary), Column("state", Text),
    Column("attempts", Integer), Column("next_attempt", Double), Column("last_status", Integer),
    Column("last_error", Text), Column("created", Double), Column("delivered_at", Double),
)
attempts = Table(
    "ck_webhook_attempts", metadata,
    Column("delivery_id", Text, primary_key=True), Column("attempt", Integer, primary_key=True),
    Column("at", Double), Column("status", Integer), Column("error", Text), Column("duration_ms", Integer),
)
E, S, J, D, A = endpoints.c, secrets.c, jobs.c, deliveries.c, attempts.c
ENDPOINT_COLUMNS = [E.id, E.owner, E.url, E.events, E.secret, E.description, E.enabled, E.created, E.updated]
DELIVERY_COLUMNS = [D.id, D.prompt_id, D.owner, D.event, D.url, D.endpoint_id, D.payload, D.state, D.attempts,
                    D.next_attempt, D.last_status, D.last_error, D.created, D.delivered_at]


def _endpoint(row: Any) -> dict[str, Any]:
    out = dict(zip([c.name for c in ENDPOINT_COLUMNS], row, strict=True))
    out["events"] = orjson.loads(out["events"])
    out["enabled"] = bool(out["enabled"])
    return out


def _delivery(row: Any) -> dict[str, Any]:
    out = dict(zip([c.name for c in DELIVERY_COLUMNS], row, strict=True))
    if out["payload"] is not None and not isinstance(out["payload"], bytes):
        out["payload"] = bytes(out["payload"])
    return out


class WebhookStore:
    """The tables above in the kernel's database (created by its migrations; see ``comfy_kernel.storage``)."""

    def __init__(self, db: Database):
        self.db = db

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- endpoints ---------------------------------------------------------------------------------

    async def endpoints(self, owner: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(select(*ENDPOINT_COLUMNS).where(E.owner == owner).order_by(E.created))
        return [_endpoint(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(select(*ENDPOINT_COLUMNS).where(E.id == endpoint_id))
        return _endpoint(row) if row else None

    async def owners_with_endpoints(self) -> set[str]:
        return {r[0] for r in await self.db.fetch_all(select(E.owner).distinct().where(E.enabled == 1))}

    async def add_endpoint(self, record: dict[str, Any]) -> None:
        await self.db.execute(endpoints.insert().values(
            id=record["id"], owner=record["owner"], url=record["url"],
            events=orjson.dumps(record["events"]).decode(), secret=record["secret"],
            description=record["description"], enabled=int(record["enabled"]), created=record["created"],
            updated=record["updated"]))

    async def update_endpoint(self, endpoint_id: str, fields: dict[str, Any]) -> None:
        values = {k: (orjson.dumps(v).decode() if k == "events" else int(v) if k == "enabled" else v)
                  for k, v in fields.items()}
        values["updated"] = time.time()
        await self.db.execute(update(endpoints).where(E.id == endpoint_id).values(**values))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.db.execute(delete(endpoints).where(E.id == endpoint_id))

    # -- owner secrets -----------------------------------------------------------------------------

    async def owner_secret(self, owner: str, make: Any) -> str:
        """The owner's signing secret, created with ``make()`` on first use."""
        found = await self.db.scalar(select(S.secret).where(S.owner == owner))
        if found is not None:
            return str(found)
        await self.db.execute(self.db.insert(secrets).values(owner=owner, secret=make(), created=time.time())
                              .on_conflict_do_nothing(index_elements=["owner"]))
        return str(await self.db.scalar(select(S.secret).where(S.owner == owner)))

    async def set_owner_secret(self, owner: str, secret: str) -> None:
        insert = self.db.insert(secrets).values(owner=owner, secret=secret, created=time.time())
        await self.db.execute(insert.on_conflict_do_update(
            index_elements=["owner"], set_={"secret": insert.excluded.secret, "created": insert.excluded.created}))

    # -- jobs --------------------------------------------------------------------------------------

    async def track(self, prompt_id: str, owner: str, targets: list[dict[str, Any]], base_url: str) -> None:
        insert = self.db.insert(jobs).values(prompt_id=prompt_id, owner=owner, targets=orjson.dumps(targets).decode(),
                                             base_url=base_url, final_queued=0, created=time.time())
        await self.db.execute(insert.on_conflict_do_update(index_elements=["prompt_id"], set_={
            "owner": insert.excluded.owner, "targets": insert.excluded.targets,
            "base_url": insert.excluded.base_url, "final_queued": 0, "created": insert.excluded.created}))

    async def tracked(self, only_open: bool = True) -> list[dict[str, Any]]:
        stmt = select(J.prompt_id, J.owner, J.targets, J.base_url, J.final_queued)
        if only_open:
            stmt = stmt.where(J.final_queued == 0)
        rows = await self.db.fetch_all(stmt)
        return [{"prompt_id": r[0], "owner": r[1], "targets": orjson.loads(r[2]), "base_url": r[3],
                 "final_queued": bool(r[4])} for r in rows]

    async def job_owner(self, prompt_id: str) -> str | None:
        found = await self.db.scalar(select(J.owner).where(J.prompt_id == prompt_id))
        return str(found) if found is not None else None

    # -- deliveries --------------------------------------------------------------------------------

    async def add_deliveries(self, rows: list[dict[str, Any]], final_of: str | None = None) -> None:
        """Queue deliveries (ignoring ids already queued); with ``final_of``, mark that job's final event done."""
        now = time.time()
        async with self.db.transaction() as tx:
            for row in rows:
                await tx.execute(self.db.insert(deliveries).values(
                    id=row["id"], prompt_id=row["prompt_id"], owner=row["owner"], event=row["event"],
                    url=row["url"], endpoint_id=row.get("endpoint_id"), payload=row["payload"], state="pending",
                    attempts=0, next_attempt=now, created=now).on_conflict_do_nothing(index_elements=["id"]))
            if final_of is not None:
                await tx.execute(update(jobs).where(J.prompt_id == final_of).values(final_queued=1))

    async def due(self, now: float, exclude: set[str], limit: int) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(select(*DELIVERY_COLUMNS).where(D.state == "pending", D.next_attempt <= now)
                                       .order_by(D.next_attempt).limit(limit + len(exclude)))
        return [d for d in map(_delivery, rows) if d["id"] not in exclude][:limit]

    async def next_due(self, exclude: set[str]) -> float | None:
        """When the next pending delivery not in ``exclude`` (those in flight) is due."""
        stmt = select(func.min(D.next_attempt)).where(D.state == "pending")
        if exclude:
            stmt = stmt.where(D.id.not_in(sorted(exclude)))
        found = await self.db.scalar(stmt)
        return float(found) if found is not None else None

    async def still_due(self, delivery: dict[str, Any]) -> bool:
        """Whether ``delivery`` (as read earlier) is still pending with the same attempt count.

        The delivery loop reads due rows while attempts may be finishing: a
        row read just before its attempt was recorded must not be sent again.
        """
        row = await self.db.fetch_one(select(D.state, D.attempts).where(D.id == delivery["id"]))
        return row is not None and row[0] == "pending" and row[1] == delivery["attempts"]

    async def prune(self, before: float) -> None:
        """Forget finished deliveries and jobs older than ``before``."""
        finished = select(D.id).where(D.state != "pending", D.created < before)
        async with self.db.transaction() as tx:
            await tx.execute(delete(attempts).where(A.delivery_id.in_(finished.scalar_subquery())))
            await tx.execute(delete(deliveries).where(D.state != "pending", D.created < before))
            await tx.execute(delete(jobs).where(J.final_queued == 1, J.created < before))

    async def record_attempt(self, delivery: dict[str, Any], outcome: Any, state: str,
                             next_attempt: float) -> None:
        """Write one attempt and the delivery's new state in one transaction."""
        attempt = delivery["attempts"] + 1
        now = time.time()
        insert = self.db.insert(attempts).values(delivery_id=delivery["id"], attempt=attempt, at=now,
                                                 status=outcome.status, error=outcome.error,
                                                 duration_ms=outcome.duration_ms)
        async with self.db.transaction() as tx:
            await tx.execute(insert.on_conflict_do_update(index_elements=["delivery_id", "attempt"], set_={
                "at": insert.excluded.at, "status": insert.excluded.status, "error": insert.excluded.error,
                "duration_ms": insert.excluded.duration_ms}))
            await tx.execute(update(deliveries).where(D.id == delivery["id"]).values(
                state=state, attempts=attempt, next_attempt=next_attempt, last_status=outcome.status,
                last_error=outcome.error, delivered_at=now if state == "delivered" else None))

    async def job_deliveries(self, prompt_id: str, owner: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(select(*DELIVERY_COLUMNS).where(D.prompt_id == prompt_id, D.owner == owner)
                                       .order_by(D.created, D.id))
        found = [_delivery(r) for r in rows]
        for d in found:
            log = await self.db.fetch_all(select(A.attempt, A.at, A.status, A.error, A.duration_ms)
                                          .where(A.delivery_id == d["id"]).order_by(A.attempt))
            d["log"] = [{"attempt": a[0], "at": a[1], "status": a[2], "error": a[3], "duration_ms": a[4]}
                        for a in log]
        return found
