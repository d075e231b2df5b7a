"""Accounts, the append-only ledger, periods, plan changes, operations and events.

Plain functions over a ``sqlite3`` connection, run by the server's database
thread and by the ``comfy-kernel billing`` command alike, each inside the
caller's transaction.

Accounts are the queue's owner keys: ``ws:<workspace id>`` with the
multiuser plugin, the user id otherwise. An account has a plan and two
buckets: **monthly** credits, granted by the plan at the start of each period
and expired at its end, and **prepaid** credits (top-ups and grants), which
never expire. Usage is taken from the monthly bucket first; only the prepaid
bucket can go below zero (a running prompt always finishes).

Every change of a balance is a ledger row whose ``key`` is unique, and the
bucket columns of ``bl_accounts`` change only together with the row that
explains them: replaying an entry (a prompt re-run after a crash, a retried
top-up approval) inserts nothing and changes nothing.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from .config import Plan, Settings

SeatsOf = Callable[[str], int]


def one_seat(account: str) -> int:
    return 1


# --- periods -----------------------------------------------------------------------------


def period_bounds(duration: str, now: float) -> tuple[str, float, float]:
    """The calendar period (UTC) holding ``now``: its key, start and end."""
    t = datetime.fromtimestamp(now, UTC)
    if duration == "ANNUAL":
        start = datetime(t.year, 1, 1, tzinfo=UTC)
        end = datetime(t.year + 1, 1, 1, tzinfo=UTC)
        return f"{t.year:04d}", start.timestamp(), end.timestamp()
    start = datetime(t.year, t.month, 1, tzinfo=UTC)
    end = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)
    return f"{t.year:04d}-{t.month:02d}", start.timestamp(), end.timestamp()


def remaining_fraction(row: dict[str, Any], now: float) -> float:
    start, end = row.get("period_start"), row.get("period_end")
    if not start or not end or end <= start:
        return 1.0
    return min(1.0, max(0.0, (end - now) / (end - start)))


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def days_in_month(t: float) -> int:
    d = datetime.fromtimestamp(t, UTC)
    return calendar.monthrange(d.year, d.month)[1]


# --- ledger ---------------------------------------------------------------------------------


def split_charge(monthly: int, prepaid: int, cost: int) -> tuple[int, int]:
    """How much of ``cost`` comes from the monthly bucket and how much from the prepaid one."""
    from_monthly = min(cost, max(monthly, 0))
    return from_monthly, cost - from_monthly


def append(conn: sqlite3.Connection, *, key: str, account: str, kind: str, bucket: str, amount: int,
           now: float, user_id: str | None = None, prompt_id: str | None = None, op_id: str | None = None,
           actor: str | None = None, note: str | None = None) -> bool:
    """Append one ledger entry and move its bucket; False (and no change) if ``key`` was used before."""
    if bucket not in ("monthly", "prepaid"):
        raise ValueError(f"unknown bucket {bucket!r}")
    cur = conn.execute(
        "INSERT OR IGNORE INTO bl_ledger(key, account, user_id, kind, bucket, amount_micros, prompt_id, op_id, "
        "actor, note, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (key, account, user_id, kind, bucket, int(amount), prompt_id, op_id, actor, note, now))
    if cur.rowcount == 0:
        return False
    column = "monthly_micros" if bucket == "monthly" else "prepaid_micros"
    conn.execute(f"UPDATE bl_accounts SET {column}={column}+?, updated=? WHERE account=?", (int(amount), now, account))
    return True


def add_event(conn: sqlite3.Connection, account: str, event_type: str, params: dict[str, Any], now: float) -> None:
    conn.execute("INSERT INTO bl_events(id, account, event_type, params, created) VALUES (?,?,?,?,?)",
                 ("ev_" + uuid.uuid4().hex, account, event_type, json.dumps(params, sort_keys=True), now))


# --- accounts -------------------------------------------------------------------------------


def account_row(conn: sqlite3.Connection, account: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM bl_accounts WHERE account=?", (account,)).fetchone()
    return dict(row) if row is not None else None


def ensure_account(conn: sqlite3.Connection, settings: Settings, account: str, now: float | None = None,
                   seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """The account's row, created on first sight and rolled into the current period."""
    now = time.time() if now is None else now
    row = account_row(conn, account)
    if row is None:
        plan = settings.default_plan
        conn.execute("INSERT OR IGNORE INTO bl_accounts(account, plan, status, created, updated) "
                     "VALUES (?,?,?,?,?)", (account, plan, "active" if plan else "none", now, now))
        row = account_row(conn, account)
        assert row is not None
    if row["period_end"] is None or row["period_end"] <= now:
        rollover(conn, settings, row, now, seats_of)
        row = account_row(conn, account)
        assert row is not None
    return row


def rollover(conn: sqlite3.Connection, settings: Settings, row: dict[str, Any], now: float,
             seats_of: SeatsOf = one_seat) -> None:
    """Close the account's period: expire monthly credits, apply a cancellation or scheduled change, grant anew."""
    account = row["account"]
    plan_slug, status = row["plan"], row["status"]
    cancel_at, pending = row["cancel_at"], row["pending_plan"]
    if cancel_at is not None and cancel_at <= now:
        add_event(conn, account, "subscription.ended", {"plan_slug": plan_slug}, now)
        plan_slug = settings.default_plan
        status = "active" if plan_slug else "ended"
        cancel_at, pending = None, None
    if pending:
        add_event(conn, account, "plan.changed", {"from": plan_slug, "to": pending}, now)
        plan_slug, status, pending = pending, "active", None
    if plan_slug is not None and settings.plan(plan_slug) is None:
        # The plan was removed from the plan file: fall back to the default plan.
        add_event(conn, account, "plan.changed", {"from": plan_slug, "to": settings.default_plan,
                                                  "reason": "plan_removed"}, now)
        plan_slug = settings.default_plan
        status = "active" if plan_slug else "none"
    if row["period"] is not None and row["monthly_micros"] > 0:
        append(conn, key=f"expire:{account}:{row['period']}", account=account, kind="expire", bucket="monthly",
               amount=-row["monthly_micros"], now=now, note=f"monthly credits of {row['period']} expired")
    plan = settings.plan(plan_slug)
    key, start, end = period_bounds(plan.duration if plan else "MONTHLY", now)
    conn.execute("UPDATE bl_accounts SET plan=?, status=?, period=?, period_start=?, period_end=?, cancel_at=?, "
                 "pending_plan=?, updated=? WHERE account=?",
                 (plan_slug, status, key, start, end, cancel_at, pending, now, account))
    if plan is not None and status in ("active", "canceled"):
        credits = plan_credits(plan, account, seats_of)
        if credits > 0 and append(conn, key=f"grant:{account}:{key}", account=account, kind="monthly_grant",
                                  bucket="monthly", amount=credits, now=now, note=f"{plan.slug} credits for {key}"):
            add_event(conn, account, "credits.monthly_grant", {"plan_slug": plan.slug, "period": key,
                                                               "amount_micros": credits}, now)


def plan_credits(plan: Plan, account: str, seats_of: SeatsOf) -> int:
    return plan.credits_micros * (seats_of(account) if plan.per_seat else 1)


def plan_price_cents(plan: Plan, account: str, seats_of: SeatsOf) -> int:
    return plan.price_cents * (seats_of(account) if plan.per_seat else 1)


def credit(conn: sqlite3.Connection, settings: Settings, *, account: str, amount: int, kind: str, now: float,
           key: str | None = None, actor: str | None = None, note: str | None = None, op_id: str | None = None,
           user_id: str | None = None) -> bool:
    """A top-up, grant or adjustment of the prepaid bucket (``amount`` in micros, may be negative)."""
    if kind not in ("topup", "grant", "adjustment"):
        raise ValueError("kind must be topup, grant or adjustment")
    ensure_account(conn, settings, account, now)
    done = append(conn, key=key or f"{kind}:{uuid.uuid4().hex}", account=account, kind=kind, bucket="prepaid",
                  amount=amount, now=now, actor=actor, note=note, op_id=op_id, user_id=user_id)
    if done:
        add_event(conn, account, {"topup": "payment.succeeded", "grant": "credits.granted",
                                  "adjustment": "credits.adjusted"}[kind],
                  {"amount_micros": amount, "note": note, "actor": actor, "op_id": op_id}, now)
    return done


# --- usage ----------------------------------------------------------------------------------


USAGE_COLUMNS = ("run_id", "prompt_id", "account", "user_id", "workspace_id", "plan", "worker", "device_type",
                 "device_name", "status", "created", "started", "ended", "wall_s", "busy_s", "nodes", "models",
                 "outputs_count", "outputs_bytes", "cost_micros", "recovered")
_NODES, _MODELS, _RECOVERED = (USAGE_COLUMNS.index(c) for c in ("nodes", "models", "recovered"))
INSERT_USAGE = (f"INSERT OR IGNORE INTO bl_usage({','.join(USAGE_COLUMNS)}) "
                 f"VALUES ({','.join('?' * len(USAGE_COLUMNS))})")


def record_usage(conn: sqlite3.Connection, settings: Settings, usage: dict[str, Any]) -> bool:
    """Store one prompt run and charge it, once per ``run_id`` (False when it was recorded before)."""
    get = usage.get
    values = [get(c) for c in USAGE_COLUMNS]
    for index, empty in ((_NODES, {}), (_MODELS, [])):
        if not isinstance(values[index], str):
            values[index] = orjson.dumps(values[index] or empty).decode()
    values[_RECOVERED] = int(bool(get("recovered")))
    cur = conn.execute(INSERT_USAGE, values)
    if cur.rowcount == 0:
        return False
    cost = int(usage.get("cost_micros") or 0)
    if cost <= 0:
        return True
    account, now = usage["account"], float(usage["ended"])
    row = ensure_account(conn, settings, account, now)
    from_monthly, from_prepaid = split_charge(row["monthly_micros"], row["prepaid_micros"], cost)
    common = {"account": account, "kind": "usage", "now": now, "user_id": usage.get("user_id"),
              "prompt_id": usage.get("prompt_id")}
    if from_monthly:
        append(conn, key=f"usage:{usage['run_id']}:monthly", bucket="monthly", amount=-from_monthly, **common)
    if from_prepaid:
        append(conn, key=f"usage:{usage['run_id']}:prepaid", bucket="prepaid", amount=-from_prepaid, **common)
    return True


# --- plans and subscriptions ------------------------------------------------------------------


def preview_change(settings: Settings, row: dict[str, Any], target: Plan, now: float,
                   seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """What subscribing ``row``'s account to ``target`` would do (nothing is changed)."""
    account = row["account"]
    current = settings.plan(row["plan"]) if row["status"] in ("active", "canceled") else None
    is_subscription = current is not None and current.slug != settings.default_plan
    fraction = remaining_fraction(row, now)
    new_price, new_credits = plan_price_cents(target, account, seats_of), round(
        plan_credits(target, account, seats_of) / 10_000)
    allowed, reason = True, None
    if current is not None and current.slug == target.slug and row["status"] == "active":
        allowed, reason = False, "same_plan"
    elif target.max_seats < seats_of(account):
        allowed, reason = False, "exceeds_max_seats"
    if not is_subscription:
        transition, immediate = "new_subscription", True
        cost_today, credits_today = new_price, new_credits
    else:
        assert current is not None
        old_price = plan_price_cents(current, account, seats_of)
        old_credits = round(plan_credits(current, account, seats_of) / 10_000)
        if current.duration != target.duration:
            transition, immediate = "duration_change", False
        elif new_price >= old_price:
            transition, immediate = "upgrade", True
        else:
            transition, immediate = "downgrade", False
        if immediate:
            cost_today = max(0, round((new_price - old_price) * fraction))
            credits_today = max(0, round((new_credits - old_credits) * fraction))
        else:
            cost_today = credits_today = 0
    effective = now if immediate else (row.get("period_end") or now)
    return {"allowed": allowed, "reason": reason, "transition_type": transition, "is_immediate": immediate,
            "effective_at": effective, "cost_today_cents": cost_today, "cost_next_period_cents": new_price,
            "credits_today_cents": credits_today, "credits_next_period_cents": new_credits,
            "current": current}


def apply_plan(conn: sqlite3.Connection, settings: Settings, account: str, target: Plan, now: float, *,
               op_id: str, actor: str | None = None, force_immediate: bool = False,
               seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """Subscribe (or move) an account to ``target`` as :func:`preview_change` describes."""
    row = ensure_account(conn, settings, account, now, seats_of)
    preview = preview_change(settings, row, target, now, seats_of)
    if preview["is_immediate"] or force_immediate:
        conn.execute("UPDATE bl_accounts SET plan=?, status='active', cancel_at=NULL, pending_plan=NULL, updated=? "
                     "WHERE account=?", (target.slug, now, account))
        if target.duration != (preview["current"].duration if preview["current"] else "MONTHLY"):
            key, start, end = period_bounds(target.duration, now)
            conn.execute("UPDATE bl_accounts SET period=?, period_start=?, period_end=? WHERE account=?",
                         (key, start, end, account))
        credits = preview["credits_today_cents"] * 10_000
        if credits > 0:
            append(conn, key=f"plan:{op_id}", account=account, kind="plan_grant", bucket="monthly", amount=credits,
                   now=now, op_id=op_id, actor=actor, note=f"{target.slug} credits for the rest of the period")
        add_event(conn, account, "subscription.created" if preview["transition_type"] == "new_subscription"
                  else "plan.changed", {"plan_slug": target.slug, "op_id": op_id, "actor": actor}, now)
    else:
        conn.execute("UPDATE bl_accounts SET pending_plan=?, updated=? WHERE account=?", (target.slug, now, account))
        add_event(conn, account, "plan.change_scheduled", {"plan_slug": target.slug, "op_id": op_id,
                                                            "effective_at": iso(preview["effective_at"])}, now)
    return preview


def cancel(conn: sqlite3.Connection, settings: Settings, account: str, now: float, op_id: str) -> float:
    """Schedule the end of the account's subscription at its period end; returns that time."""
    row = ensure_account(conn, settings, account, now)
    if row["status"] != "active" or row["plan"] is None or row["plan"] == settings.default_plan:
        raise LookupError("There is no active subscription to cancel")
    end = row["period_end"]
    conn.execute("UPDATE bl_accounts SET status='canceled', cancel_at=?, pending_plan=NULL, updated=? "
                 "WHERE account=?", (end, now, account))
    add_event(conn, account, "subscription.canceled", {"plan_slug": row["plan"], "cancel_at": iso(end),
                                                       "op_id": op_id}, now)
    return end


def resume(conn: sqlite3.Connection, settings: Settings, account: str, now: float, op_id: str) -> None:
    row = ensure_account(conn, settings, account, now)
    if row["status"] != "canceled" or row["cancel_at"] is None or row["cancel_at"] <= now:
        raise LookupError("The subscription is not in its cancellation period")
    conn.execute("UPDATE bl_accounts SET status='active', cancel_at=NULL, updated=? WHERE account=?", (now, account))
    add_event(conn, account, "subscription.resumed", {"plan_slug": row["plan"], "op_id": op_id}, now)


# --- operations -----------------------------------------------------------------------------


def op_json(row: Any) -> dict[str, Any]:
    out = {"id": row["id"], "status": row["status"], "started_at": iso(row["started"])}
    if row["completed"] is not None:
        out["completed_at"] = iso(row["completed"])
    if row["error_message"]:
        out["error_message"] = row["error_message"]
    return out


def create_op(conn: sqlite3.Connection, *, account: str, user_id: str | None, kind: str, params: dict[str, Any],
              idempotency_key: str | None, provider: str, now: float) -> tuple[dict[str, Any], bool]:
    """A new operation, or the one this account already created with ``idempotency_key`` (then False)."""
    if idempotency_key:
        row = conn.execute("SELECT * FROM bl_ops WHERE account=? AND idempotency_key=?",
                           (account, idempotency_key)).fetchone()
        if row is not None:
            return dict(row), False
    op_id = "bop_" + uuid.uuid4().hex
    conn.execute("INSERT INTO bl_ops(id, account, user_id, kind, status, params, idempotency_key, provider, started) "
                 "VALUES (?,?,?,?,?,?,?,?,?)", (op_id, account, user_id, kind, "pending", json.dumps(params),
                                                idempotency_key or None, provider, now))
    return dict(conn.execute("SELECT * FROM bl_ops WHERE id=?", (op_id,)).fetchone()), True


def get_op(conn: sqlite3.Connection, op_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM bl_ops WHERE id=?", (op_id,)).fetchone()
    return dict(row) if row is not None else None


def settle_op(conn: sqlite3.Connection, settings: Settings, op_id: str, succeeded: bool, now: float, *,
              error: str | None = None, actor: str | None = None, seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """Complete a pending operation and apply what it paid for (once: a settled op is left alone)."""
    op = get_op(conn, op_id)
    if op is None:
        raise KeyError(op_id)
    if op["status"] != "pending":
        return op
    params = json.loads(op["params"])
    account = op["account"]
    if succeeded:
        if op["kind"] == "topup":
            credit(conn, settings, account=account, amount=int(params["amount_cents"]) * 10_000, kind="topup",
                   now=now, key=f"op:{op_id}", actor=actor, op_id=op_id, user_id=op["user_id"],
                   note="top-up")
        elif op["kind"] == "subscribe":
            plan = settings.plan(params["plan_slug"])
            if plan is None:
                succeeded, error = False, f"The plan {params['plan_slug']} no longer exists"
            else:
                apply_plan(conn, settings, account, plan, now, op_id=op_id, actor=actor, seats_of=seats_of)
    elif op["kind"] == "topup":
        add_event(conn, account, "payment.failed", {"op_id": op_id, "amount_cents": params.get("amount_cents"),
                                                    "reason": error}, now)
    conn.execute("UPDATE bl_ops SET status=?, error_message=?, completed=? WHERE id=?",
                 ("succeeded" if succeeded else "failed", None if succeeded else (error or "Declined"), now, op_id))
    result = get_op(conn, op_id)
    assert result is not None
    return result
