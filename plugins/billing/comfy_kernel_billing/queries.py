"""Reading usage, the ledger and events back: by user, workspace, account, model, device or plan, per period."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from .ledger import iso

GROUPS = {
    "user": "u.user_id",
    "workspace": "COALESCE(u.workspace_id, u.account)",
    "account": "u.account",
    "model": "m.value",
    "device": "u.device_type",
    "plan": "u.plan",
    "status": "u.status",
    "none": "NULL",
}
BUCKETS = {
    "hour": "%Y-%m-%dT%H:00:00Z",
    "day": "%Y-%m-%d",
    "month": "%Y-%m",
    "year": "%Y",
    "all": None,
}
SUMMARY_FIELDS = ("period", "key", "prompts", "wall_s", "busy_s", "cost_micros", "outputs_count", "outputs_bytes")
PROMPT_FIELDS = ("run_id", "prompt_id", "account", "user_id", "workspace_id", "plan", "worker", "device_type",
                 "device_name", "status", "created", "started", "ended", "wall_s", "busy_s", "cost_micros",
                 "outputs_count", "outputs_bytes", "models", "nodes", "recovered")


@dataclass
class UsageFilter:
    """Which usage rows a query covers (all None: everything)."""

    start: float | None = None
    end: float | None = None
    account: str | None = None
    user_id: str | None = None
    workspace_id: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for column, value in (("u.account", self.account), ("u.user_id", self.user_id),
                              ("u.workspace_id", self.workspace_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if self.start is not None:
            clauses.append("u.ended>=?")
            args.append(self.start)
        if self.end is not None:
            clauses.append("u.ended<?")
            args.append(self.end)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def usage_summary(conn: sqlite3.Connection, filt: UsageFilter, group_by: str = "user",
                  bucket: str = "day") -> list[dict[str, Any]]:
    """Totals per (period, key). With ``group_by=model`` a prompt counts once for every model it used."""
    key = GROUPS[group_by]
    fmt = BUCKETS[bucket]
    period = f"strftime('{fmt}', u.ended, 'unixepoch')" if fmt else "'all'"
    source = "bl_usage u, json_each(u.models) m" if group_by == "model" else "bl_usage u"
    where, args = filt.where()
    sql = (f"SELECT {period} AS period, {key} AS key, COUNT(*) AS prompts, SUM(u.wall_s) AS wall_s, "
           f"SUM(u.busy_s) AS busy_s, SUM(u.cost_micros) AS cost_micros, SUM(u.outputs_count) AS outputs_count, "
           f"SUM(u.outputs_bytes) AS outputs_bytes FROM {source}{where} GROUP BY 1, 2 ORDER BY 1, 2")
    return [{k: row[k] for k in SUMMARY_FIELDS} for row in conn.execute(sql, args)]


def usage_prompts(conn: sqlite3.Connection, filt: UsageFilter, limit: int, offset: int) -> tuple[list[dict], int]:
    """One row per metered prompt run, newest first, with its per-node figures and models."""
    where, args = filt.where()
    total = conn.execute(f"SELECT COUNT(*) FROM bl_usage u{where}", args).fetchone()[0]
    rows = conn.execute(f"SELECT * FROM bl_usage u{where} ORDER BY u.ended DESC, u.run_id LIMIT ? OFFSET ?",
                        [*args, limit, offset]).fetchall()
    out = []
    for row in rows:
        item = {k: row[k] for k in PROMPT_FIELDS}
        item["models"] = json.loads(item["models"])
        item["nodes"] = json.loads(item["nodes"])
        item["recovered"] = bool(item["recovered"])
        out.append(item)
    return out, int(total)


def ledger_rows(conn: sqlite3.Connection, account: str | None, limit: int, offset: int) -> tuple[list[dict], int]:
    where, args = (" WHERE account=?", [account]) if account else ("", [])
    total = conn.execute(f"SELECT COUNT(*) FROM bl_ledger{where}", args).fetchone()[0]
    rows = conn.execute(f"SELECT * FROM bl_ledger{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                        [*args, limit, offset]).fetchall()
    return [dict(r) for r in rows], int(total)


def events_page(conn: sqlite3.Connection, account: str, page: int, limit: int) -> dict[str, Any]:
    total = conn.execute("SELECT COUNT(*) FROM bl_events WHERE account=?", (account,)).fetchone()[0]
    rows = conn.execute("SELECT * FROM bl_events WHERE account=? ORDER BY seq DESC LIMIT ? OFFSET ?",
                        (account, limit, (page - 1) * limit)).fetchall()
    events = [{"event_id": r["id"], "event_type": r["event_type"], "createdAt": iso(r["created"]),
               "params": json.loads(r["params"])} for r in rows]
    return {"events": events, "total": int(total), "page": page, "limit": limit,
            "totalPages": (int(total) + limit - 1) // limit}


def ledger_balance_check(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Accounts whose stored buckets differ from the sum of their ledger entries (should be none)."""
    rows = conn.execute(
        "SELECT a.account, a.monthly_micros, a.prepaid_micros, "
        "COALESCE(SUM(CASE WHEN l.bucket='monthly' THEN l.amount_micros END), 0) AS ledger_monthly, "
        "COALESCE(SUM(CASE WHEN l.bucket='prepaid' THEN l.amount_micros END), 0) AS ledger_prepaid "
        "FROM bl_accounts a LEFT JOIN bl_ledger l ON l.account=a.account GROUP BY a.account").fetchall()
    return [dict(r) for r in rows
            if r["monthly_micros"] != r["ledger_monthly"] or r["prepaid_micros"] != r["ledger_prepaid"]]


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
