"""Reading usage, the ledger and events back: by user, workspace, account, model, device or plan, per period.

Reads run on the kernel's database outside any transaction. Two things are
said differently by SQLite and PostgreSQL and are built here per dialect: a
time's calendar period as text (:class:`period`) and the list of models of a
usage row as rows (:func:`models_of`). Sums of integer columns are cast back
to integers (PostgreSQL sums a ``BIGINT`` to a ``NUMERIC``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Text, case, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from comfy_kernel.storage import Database

from .ledger import iso
from .tables import EVENT_COLUMNS, LEDGER_COLUMNS, USAGE_COLUMNS, accounts, events, ledger, usage

U = usage.c
GROUPS = ("user", "workspace", "account", "model", "device", "plan", "status", "none")
BUCKETS = {
    "hour": ("%Y-%m-%dT%H:00:00Z", 'YYYY-MM-DD"T"HH24:00:00"Z"'),
    "day": ("%Y-%m-%d", "YYYY-MM-DD"),
    "month": ("%Y-%m", "YYYY-MM"),
    "year": ("%Y", "YYYY"),
    "all": None,
}
SUMMARY_FIELDS = ("period", "key", "prompts", "wall_s", "busy_s", "cost_micros", "outputs_count", "outputs_bytes")
PROMPT_FIELDS = ("run_id", "prompt_id", "account", "user_id", "workspace_id", "plan", "worker", "device_type",
                 "device_name", "status", "created", "started", "ended", "wall_s", "busy_s", "cost_micros",
                 "outputs_count", "outputs_bytes", "models", "nodes", "recovered")


class period(FunctionElement):
    """``period(seconds, bucket)``: the UTC calendar period of a Unix time as text (``2025-06`` for a month)."""

    type = Text()
    inherit_cache = False  # the bucket is part of the SQL text, not a parameter

    def __init__(self, seconds: Any, bucket: str):
        self.bucket = bucket
        super().__init__(seconds)


@compiles(period, "sqlite")
def _period_sqlite(element: period, compiler: Any, **kw: Any) -> str:
    return f"strftime('{BUCKETS[element.bucket][0]}', {compiler.process(element.clauses, **kw)}, 'unixepoch')"


@compiles(period, "postgresql")
def _period_postgres(element: period, compiler: Any, **kw: Any) -> str:
    return (f"to_char(to_timestamp({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC', "
            f"'{BUCKETS[element.bucket][1]}')")


def models_of(db: Database) -> Any:
    """The usage row's models (a JSON list in a text column), one row each, column ``value``."""
    if db.kind == "postgresql":
        return func.jsonb_array_elements_text(cast(U.models, JSONB)).table_valued("value").render_derived(name="m")
    return func.json_each(U.models).table_valued("value").alias("m")


@dataclass
class UsageFilter:
    """Which usage rows a query covers (all None: everything)."""

    start: float | None = None
    end: float | None = None
    account: str | None = None
    user_id: str | None = None
    workspace_id: str | None = None

    def where(self) -> list[Any]:
        clauses = [column == value for column, value in ((U.account, self.account), (U.user_id, self.user_id),
                                                         (U.workspace_id, self.workspace_id)) if value is not None]
        if self.start is not None:
            clauses.append(U.ended >= self.start)
        if self.end is not None:
            clauses.append(U.ended < self.end)
        return clauses


def _int_sum(column: Any) -> Any:
    return cast(func.sum(column), BigInteger)


async def usage_summary(db: Database, filt: UsageFilter, group_by: str = "user",
                        bucket: str = "day") -> list[dict[str, Any]]:
    """Totals per (period, key). With ``group_by=model`` a prompt counts once for every model it used."""
    sources: list[Any] = [usage]
    if group_by == "model":
        models = models_of(db)
        sources.append(models)
        key = models.c.value
    else:
        key = {"user": U.user_id, "workspace": func.coalesce(U.workspace_id, U.account), "account": U.account,
               "device": U.device_type, "plan": U.plan, "status": U.status, "none": None}[group_by]
    when = period(U.ended, bucket) if BUCKETS[bucket] else None
    grouped = [e for e in (when, key) if e is not None]
    stmt = (select(*grouped, func.count().label("prompts"), func.sum(U.wall_s), func.sum(U.busy_s),
                   _int_sum(U.cost_micros), _int_sum(U.outputs_count), _int_sum(U.outputs_bytes))
            .select_from(*sources).where(*filt.where()))
    if grouped:
        stmt = stmt.group_by(*grouped).order_by(*(e.asc().nulls_first() for e in grouped))
    out = []
    for row in await db.fetch_all(stmt):
        values = list(row)
        period_value = values.pop(0) if when is not None else "all"
        key_value = values.pop(0) if key is not None else None
        if values[0] == 0:  # no GROUP BY over no rows still answers one row
            continue
        out.append(dict(zip(SUMMARY_FIELDS, (period_value, key_value, *values), strict=True)))
    return out


async def usage_prompts(db: Database, filt: UsageFilter, limit: int, offset: int) -> tuple[list[dict], int]:
    """One row per metered prompt run, newest first, with its per-node figures and models."""
    total = await db.scalar(select(func.count()).select_from(usage).where(*filt.where()))
    rows = await db.fetch_all(select(usage).where(*filt.where()).order_by(U.ended.desc(), U.run_id)
                              .limit(limit).offset(offset))
    out = []
    for row in rows:
        record = dict(zip(USAGE_COLUMNS, row, strict=True))
        item = {k: record[k] for k in PROMPT_FIELDS}
        item["models"] = json.loads(item["models"])
        item["nodes"] = json.loads(item["nodes"])
        item["recovered"] = bool(item["recovered"])
        out.append(item)
    return out, int(total)


async def ledger_rows(db: Database, account: str | None, limit: int, offset: int) -> tuple[list[dict], int]:
    where = [ledger.c.account == account] if account else []
    total = await db.scalar(select(func.count()).select_from(ledger).where(*where))
    rows = await db.fetch_all(select(ledger).where(*where).order_by(ledger.c.id.desc()).limit(limit).offset(offset))
    return [dict(zip(LEDGER_COLUMNS, r, strict=True)) for r in rows], int(total)


async def events_page(db: Database, account: str, page: int, limit: int) -> dict[str, Any]:
    total = int(await db.scalar(select(func.count()).select_from(events).where(events.c.account == account)))
    rows = await db.fetch_all(select(events).where(events.c.account == account).order_by(events.c.seq.desc())
                              .limit(limit).offset((page - 1) * limit))
    found = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]
    return {"events": [{"event_id": r["id"], "event_type": r["event_type"], "createdAt": iso(r["created"]),
                        "params": json.loads(r["params"])} for r in found],
            "total": total, "page": page, "limit": limit, "totalPages": (total + limit - 1) // limit}


async def ledger_balance_check(db: Database) -> list[dict[str, Any]]:
    """Accounts whose stored buckets differ from the sum of their ledger entries (should be none)."""
    a, entry = accounts.c, ledger.c

    def bucket_sum(name: str) -> Any:
        return func.coalesce(_int_sum(case((entry.bucket == name, entry.amount_micros))), 0)

    rows = await db.fetch_all(
        select(a.account, a.monthly_micros, a.prepaid_micros, bucket_sum("monthly"), bucket_sum("prepaid"))
        .select_from(accounts.outerjoin(ledger, entry.account == a.account))
        .group_by(a.account, a.monthly_micros, a.prepaid_micros))
    fields = ("account", "monthly_micros", "prepaid_micros", "ledger_monthly", "ledger_prepaid")
    return [dict(zip(fields, r, strict=True)) for r in rows if r[1] != r[3] or r[2] != r[4]]


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
