"""Accounts, the append-only ledger, periods, plan changes, operations and events.

Async functions over a transaction of the kernel's database
(``comfy_kernel.storage.Transaction``, SQLite or PostgreSQL), run by the
server (:class:`.store.BillingStore`) and by the ``comfy-kernel billing``
command alike, each inside the caller's transaction.

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

Two transactions may work on one account at once (two servers on one
PostgreSQL database, a server and the command): every change starts by
reading the account row with ``FOR UPDATE`` (:func:`ensure_account`), so the
second waits for the first to commit and then decides on the buckets the
first left. (SQLite has a single writer; there the lock is a no-op.)
"""

from __future__ import annotations

import calendar
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update

from comfy_kernel.storage import Database

from .config import Plan, Settings
from .tables import ACCOUNT_COLUMNS, OP_COLUMNS, USAGE_COLUMNS, accounts, events, ledger, ops, usage

SeatsOf = Callable[[str], Awaitable[int]]
Tx = Any  # comfy_kernel.storage.Transaction, or anything with its execute/fetch_one/fetch_all/scalar and .db


async def one_seat(account: str) -> int:
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


# --- statements ------------------------------------------------------------------------------

APPEND_FIELDS = ("key", "account", "user_id", "kind", "bucket", "amount_micros", "prompt_id", "op_id", "actor",
                 "note", "created")


class Statements:
    """The statements a metered prompt runs, compiled once per database (the rest are built per call)."""

    def __init__(self, db: Database):
        a = accounts.c
        by_account = select(accounts).where(a.account == bindparam("account"))
        self.account = db.prepare(by_account)
        self.locked_account = db.prepare(by_account.with_for_update())
        self.append = db.prepare(db.insert(ledger).values({c: bindparam(f"v_{c}") for c in APPEND_FIELDS})
                                 .on_conflict_do_nothing(index_elements=["key"]))
        self.move = {bucket: db.prepare(update(accounts).where(a.account == bindparam("account")).values(
            {column: accounts.c[column] + bindparam("amount"), "updated": bindparam("now")}))
            for bucket, column in (("monthly", "monthly_micros"), ("prepaid", "prepaid_micros"))}
        self.usage = db.prepare(db.insert(usage).values({c: bindparam(f"v_{c}") for c in USAGE_COLUMNS})
                                .on_conflict_do_nothing(index_elements=["run_id"]))


_statements: weakref.WeakKeyDictionary[Database, Statements] = weakref.WeakKeyDictionary()


def statements(tx: Tx) -> Statements:
    """The prepared statements of the database ``tx`` (a transaction, or the database itself) runs on."""
    db = tx if isinstance(tx, Database) else tx.db
    found = _statements.get(db)
    if found is None:
        found = _statements[db] = Statements(db)
    return found


# --- ledger ---------------------------------------------------------------------------------


def split_charge(monthly: int, prepaid: int, cost: int) -> tuple[int, int]:
    """How much of ``cost`` comes from the monthly bucket and how much from the prepaid one."""
    from_monthly = min(cost, max(monthly, 0))
    return from_monthly, cost - from_monthly


async def append(tx: Tx, *, key: str, account: str, kind: str, bucket: str, amount: int, now: float,
                 user_id: str | None = None, prompt_id: str | None = None, op_id: str | None = None,
                 actor: str | None = None, note: str | None = None) -> bool:
    """Append one ledger entry and move its bucket; False (and no change) if ``key`` was used before."""
    if bucket not in ("monthly", "prepaid"):
        raise ValueError(f"unknown bucket {bucket!r}")
    s = statements(tx)
    done = await tx.execute(s.append, {
        "v_key": key, "v_account": account, "v_user_id": user_id, "v_kind": kind, "v_bucket": bucket,
        "v_amount_micros": int(amount), "v_prompt_id": prompt_id, "v_op_id": op_id, "v_actor": actor,
        "v_note": note, "v_created": now})
    if not done:
        return False
    await tx.execute(s.move[bucket], {"account": account, "amount": int(amount), "now": now})
    return True


async def add_event(tx: Tx, account: str, event_type: str, params: dict[str, Any], now: float) -> None:
    await tx.execute(events.insert().values(id="ev_" + uuid.uuid4().hex, account=account, event_type=event_type,
                                            params=json.dumps(params, sort_keys=True), created=now))


# --- accounts -------------------------------------------------------------------------------


def _account(row: Any) -> dict[str, Any]:
    return dict(zip(ACCOUNT_COLUMNS, row, strict=True))


async def account_row(tx: Tx, account: str, lock: bool = False) -> dict[str, Any] | None:
    """The account's row; with ``lock``, held until the transaction ends (PostgreSQL ``FOR UPDATE``)."""
    s = statements(tx)
    row = await tx.fetch_one(s.locked_account if lock else s.account, {"account": account})
    return _account(row) if row is not None else None


async def ensure_account(tx: Tx, settings: Settings, account: str, now: float | None = None,
                         seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """The account's row, locked, created on first sight and rolled into the current period."""
    now = time.time() if now is None else now
    row = await account_row(tx, account, lock=True)
    if row is None:
        plan = settings.default_plan
        await tx.execute(tx.db.insert(accounts).values(
            account=account, plan=plan, status="active" if plan else "none", monthly_micros=0, prepaid_micros=0,
            created=now, updated=now).on_conflict_do_nothing(index_elements=["account"]))
        row = await account_row(tx, account, lock=True)
        assert row is not None
    if row["period_end"] is None or row["period_end"] <= now:
        await rollover(tx, settings, row, now, seats_of)
        row = await account_row(tx, account)
        assert row is not None
    return row


async def rollover(tx: Tx, settings: Settings, row: dict[str, Any], now: float,
                   seats_of: SeatsOf = one_seat) -> None:
    """Close the account's period: expire monthly credits, apply a cancellation or scheduled change, grant anew."""
    account = row["account"]
    plan_slug, status = row["plan"], row["status"]
    cancel_at, pending = row["cancel_at"], row["pending_plan"]
    if cancel_at is not None and cancel_at <= now:
        await add_event(tx, account, "subscription.ended", {"plan_slug": plan_slug}, now)
        plan_slug = settings.default_plan
        status = "active" if plan_slug else "ended"
        cancel_at, pending = None, None
    if pending:
        await add_event(tx, account, "plan.changed", {"from": plan_slug, "to": pending}, now)
        plan_slug, status, pending = pending, "active", None
    if plan_slug is not None and settings.plan(plan_slug) is None:
        # The plan was removed from the plan file: fall back to the default plan.
        await add_event(tx, account, "plan.changed", {"from": plan_slug, "to": settings.default_plan,
                                                      "reason": "plan_removed"}, now)
        plan_slug = settings.default_plan
        status = "active" if plan_slug else "none"
    if row["period"] is not None and row["monthly_micros"] > 0:
        await append(tx, key=f"expire:{account}:{row['period']}", account=account, kind="expire", bucket="monthly",
                     amount=-row["monthly_micros"], now=now, note=f"monthly credits of {row['period']} expired")
    plan = settings.plan(plan_slug)
    key, start, end = period_bounds(plan.duration if plan else "MONTHLY", now)
    await tx.execute(update(accounts).where(accounts.c.account == account).values(
        plan=plan_slug, status=status, period=key, period_start=start, period_end=end, cancel_at=cancel_at,
        pending_plan=pending, updated=now))
    if plan is not None and status in ("active", "canceled"):
        credits = plan_credits(plan, await seats_of(account) if plan.per_seat else 1)
        if credits > 0 and await append(tx, key=f"grant:{account}:{key}", account=account, kind="monthly_grant",
                                        bucket="monthly", amount=credits, now=now,
                                        note=f"{plan.slug} credits for {key}"):
            await add_event(tx, account, "credits.monthly_grant", {"plan_slug": plan.slug, "period": key,
                                                                   "amount_micros": credits}, now)


def plan_credits(plan: Plan, seats: int) -> int:
    return plan.credits_micros * (seats if plan.per_seat else 1)


def plan_price_cents(plan: Plan, seats: int) -> int:
    return plan.price_cents * (seats if plan.per_seat else 1)


async def credit(tx: Tx, settings: Settings, *, account: str, amount: int, kind: str, now: float,
                 key: str | None = None, actor: str | None = None, note: str | None = None,
                 op_id: str | None = None, user_id: str | None = None) -> bool:
    """A top-up, grant or adjustment of the prepaid bucket (``amount`` in micros, may be negative)."""
    if kind not in ("topup", "grant", "adjustment"):
        raise ValueError("kind must be topup, grant or adjustment")
    await ensure_account(tx, settings, account, now)
    done = await append(tx, key=key or f"{kind}:{uuid.uuid4().hex}", account=account, kind=kind, bucket="prepaid",
                        amount=amount, now=now, actor=actor, note=note, op_id=op_id, user_id=user_id)
    if done:
        await add_event(tx, account, {"topup": "payment.succeeded", "grant": "credits.granted",
                                      "adjustment": "credits.adjusted"}[kind],
                        {"amount_micros": amount, "note": note, "actor": actor, "op_id": op_id}, now)
    return done


# --- usage ----------------------------------------------------------------------------------


def usage_values(record: dict[str, Any]) -> dict[str, Any]:
    """A usage record as the bound values of :attr:`Statements.usage` (JSON columns encoded)."""
    get = record.get
    values = {f"v_{c}": get(c) for c in USAGE_COLUMNS}
    for column, empty in (("nodes", {}), ("models", [])):
        if not isinstance(values[f"v_{column}"], str):
            values[f"v_{column}"] = orjson.dumps(values[f"v_{column}"] or empty).decode()
    values["v_recovered"] = int(bool(get("recovered")))
    for column in ("outputs_count", "outputs_bytes", "cost_micros"):
        values[f"v_{column}"] = int(values[f"v_{column}"] or 0)
    return values


async def record_usage(tx: Tx, settings: Settings, record: dict[str, Any], seats_of: SeatsOf = one_seat) -> bool:
    """Store one prompt run and charge it, once per ``run_id`` (False when it was recorded before)."""
    if not await tx.execute(statements(tx).usage, usage_values(record)):
        return False
    cost = int(record.get("cost_micros") or 0)
    if cost <= 0:
        return True
    account, now = record["account"], float(record["ended"])
    row = await ensure_account(tx, settings, account, now, seats_of)
    from_monthly, from_prepaid = split_charge(row["monthly_micros"], row["prepaid_micros"], cost)
    common = {"account": account, "kind": "usage", "now": now, "user_id": record.get("user_id"),
              "prompt_id": record.get("prompt_id")}
    if from_monthly:
        await append(tx, key=f"usage:{record['run_id']}:monthly", bucket="monthly", amount=-from_monthly, **common)
    if from_prepaid:
        await append(tx, key=f"usage:{record['run_id']}:prepaid", bucket="prepaid", amount=-from_prepaid, **common)
    return True


# --- plans and subscriptions ------------------------------------------------------------------


def preview_change(settings: Settings, row: dict[str, Any], target: Plan, now: float,
                   seats: int = 1) -> dict[str, Any]:
    """What subscribing ``row``'s account (of ``seats`` members) to ``target`` would do (nothing is changed)."""
    current = settings.plan(row["plan"]) if row["status"] in ("active", "canceled") else None
    is_subscription = current is not None and current.slug != settings.default_plan
    fraction = remaining_fraction(row, now)
    new_price, new_credits = plan_price_cents(target, seats), round(plan_credits(target, seats) / 10_000)
    allowed, reason = True, None
    if current is not None and current.slug == target.slug and row["status"] == "active":
        allowed, reason = False, "same_plan"
    elif target.max_seats < seats:
        allowed, reason = False, "exceeds_max_seats"
    if not is_subscription:
        transition, immediate = "new_subscription", True
        cost_today, credits_today = new_price, new_credits
    else:
        assert current is not None
        old_price = plan_price_cents(current, seats)
        old_credits = round(plan_credits(current, seats) / 10_000)
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


async def apply_plan(tx: Tx, settings: Settings, account: str, target: Plan, now: float, *, op_id: str,
                     actor: str | None = None, force_immediate: bool = False,
                     seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """Subscribe (or move) an account to ``target`` as :func:`preview_change` describes."""
    row = await ensure_account(tx, settings, account, now, seats_of)
    preview = preview_change(settings, row, target, now, await seats_of(account))
    where = accounts.c.account == account
    if preview["is_immediate"] or force_immediate:
        await tx.execute(update(accounts).where(where).values(plan=target.slug, status="active", cancel_at=None,
                                                              pending_plan=None, updated=now))
        if target.duration != (preview["current"].duration if preview["current"] else "MONTHLY"):
            key, start, end = period_bounds(target.duration, now)
            await tx.execute(update(accounts).where(where).values(period=key, period_start=start, period_end=end))
        credits = preview["credits_today_cents"] * 10_000
        if credits > 0:
            await append(tx, key=f"plan:{op_id}", account=account, kind="plan_grant", bucket="monthly",
                         amount=credits, now=now, op_id=op_id, actor=actor,
                         note=f"{target.slug} credits for the rest of the period")
        await add_event(tx, account, "subscription.created" if preview["transition_type"] == "new_subscription"
                        else "plan.changed", {"plan_slug": target.slug, "op_id": op_id, "actor": actor}, now)
    else:
        await tx.execute(update(accounts).where(where).values(pending_plan=target.slug, updated=now))
        await add_event(tx, account, "plan.change_scheduled", {"plan_slug": target.slug, "op_id": op_id,
                                                                "effective_at": iso(preview["effective_at"])}, now)
    return preview


async def cancel(tx: Tx, settings: Settings, account: str, now: float, op_id: str) -> float:
    """Schedule the end of the account's subscription at its period end; returns that time."""
    row = await ensure_account(tx, settings, account, now)
    if row["status"] != "active" or row["plan"] is None or row["plan"] == settings.default_plan:
        raise LookupError("There is no active subscription to cancel")
    end = row["period_end"]
    await tx.execute(update(accounts).where(accounts.c.account == account).values(
        status="canceled", cancel_at=end, pending_plan=None, updated=now))
    await add_event(tx, account, "subscription.canceled", {"plan_slug": row["plan"], "cancel_at": iso(end),
                                                           "op_id": op_id}, now)
    return end


async def resume(tx: Tx, settings: Settings, account: str, now: float, op_id: str) -> None:
    row = await ensure_account(tx, settings, account, now)
    if row["status"] != "canceled" or row["cancel_at"] is None or row["cancel_at"] <= now:
        raise LookupError("The subscription is not in its cancellation period")
    await tx.execute(update(accounts).where(accounts.c.account == account).values(
        status="active", cancel_at=None, updated=now))
    await add_event(tx, account, "subscription.resumed", {"plan_slug": row["plan"], "op_id": op_id}, now)


# --- operations -----------------------------------------------------------------------------


def op_json(row: Any) -> dict[str, Any]:
    out = {"id": row["id"], "status": row["status"], "started_at": iso(row["started"])}
    if row["completed"] is not None:
        out["completed_at"] = iso(row["completed"])
    if row["error_message"]:
        out["error_message"] = row["error_message"]
    return out


def _op(row: Any) -> dict[str, Any]:
    return dict(zip(OP_COLUMNS, row, strict=True))


async def create_op(tx: Tx, *, account: str, user_id: str | None, kind: str, params: dict[str, Any],
                    idempotency_key: str | None, provider: str, now: float) -> tuple[dict[str, Any], bool]:
    """A new operation, or the one this account already created with ``idempotency_key`` (then False).

    Two requests with one key at once: the second insert finds the first's
    row (``ON CONFLICT DO NOTHING`` on the key) and answers it.
    """
    op_id = "bop_" + uuid.uuid4().hex
    created = await tx.execute(tx.db.insert(ops).values(
        id=op_id, account=account, user_id=user_id, kind=kind, status="pending", params=json.dumps(params),
        idempotency_key=idempotency_key or None, provider=provider, started=now,
    ).on_conflict_do_nothing(index_elements=["account", "idempotency_key"]))
    if created:
        found = await get_op(tx, op_id)
    else:
        row = await tx.fetch_one(select(ops).where(ops.c.account == account,
                                                   ops.c.idempotency_key == idempotency_key))
        found = _op(row) if row is not None else None
    assert found is not None
    return found, bool(created)


async def get_op(tx: Tx, op_id: str, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(ops).where(ops.c.id == op_id)
    row = await tx.fetch_one(stmt.with_for_update() if lock else stmt)
    return _op(row) if row is not None else None


async def settle_op(tx: Tx, settings: Settings, op_id: str, succeeded: bool, now: float, *,
                    error: str | None = None, actor: str | None = None,
                    seats_of: SeatsOf = one_seat) -> dict[str, Any]:
    """Complete a pending operation and apply what it paid for (once: a settled op is left alone)."""
    op = await get_op(tx, op_id, lock=True)
    if op is None:
        raise KeyError(op_id)
    if op["status"] != "pending":
        return op
    params = json.loads(op["params"])
    account = op["account"]
    if succeeded:
        if op["kind"] == "topup":
            await credit(tx, settings, account=account, amount=int(params["amount_cents"]) * 10_000, kind="topup",
                         now=now, key=f"op:{op_id}", actor=actor, op_id=op_id, user_id=op["user_id"],
                         note="top-up")
        elif op["kind"] == "subscribe":
            plan = settings.plan(params["plan_slug"])
            if plan is None:
                succeeded, error = False, f"The plan {params['plan_slug']} no longer exists"
            else:
                await apply_plan(tx, settings, account, plan, now, op_id=op_id, actor=actor, seats_of=seats_of)
    elif op["kind"] == "topup":
        await add_event(tx, account, "payment.failed", {"op_id": op_id, "amount_cents": params.get("amount_cents"),
                                                        "reason": error}, now)
    await tx.execute(update(ops).where(ops.c.id == op_id).values(
        status="succeeded" if succeeded else "failed", error_message=None if succeeded else (error or "Declined"),
        completed=now))
    result = await get_op(tx, op_id)
    assert result is not None
    return result
