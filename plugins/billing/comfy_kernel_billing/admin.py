"""Administrators' routes: usage over time (JSON or CSV), accounts, credits, plans and approvals.

All under ``/api/admin/billing/``; they need an administrator (the multiuser
plugin's admin role; without it nobody qualifies and the ``comfy-kernel
billing`` command does the same jobs). An account is named by its key
(``ws:<workspace id>``, or a user id without the multiuser plugin) or as
``user:<user id or username>`` for that user's personal workspace.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response
from comfy_kernel.storage import Database

from . import ledger, queries, tables
from .config import MICROS
from .routes import caller, csv_response, int_param, json_body, text, usage_response, when
from .service import Billing, fail
from .store import BillingStore
from .tables import ACCOUNT_COLUMNS, OP_COLUMNS

CREDIT_KINDS = ("grant", "topup", "adjustment")


def register(routes: Any, billing: Billing) -> None:
    def admin(request: Request) -> Any:
        identity, _account = caller(request)
        if not identity.is_admin:
            raise fail(403, "forbidden", "Administrator role required")
        if not billing.started or billing.store is None:
            raise fail(503, "unavailable", "Billing is not available; see the server log")
        return identity

    def store() -> BillingStore:
        assert billing.store is not None
        return billing.store

    async def fresh() -> Database:
        return await billing.fresh()

    async def account_of(raw: str) -> str:
        name = unquote(raw).strip()
        if not name or len(name) > 300:
            raise fail(400, "invalid_request", "An account key is required")
        if name.startswith("user:"):
            found = await billing.tables.personal_account(name[5:])
            if found is None:
                raise fail(404, "not_found", f"No user {name[5:]!r}")
            return found
        return name

    def account_json(row: dict[str, Any]) -> dict[str, Any]:
        return {"account": row["account"], "plan_slug": row["plan"], "status": row["status"],
                "balance_micros": int(row["monthly_micros"]) + int(row["prepaid_micros"]),
                "monthly_micros": int(row["monthly_micros"]), "prepaid_micros": int(row["prepaid_micros"]),
                "currency": billing.settings.currency, "period": row["period"],
                "period_end": ledger.iso(row["period_end"]), "cancel_at": ledger.iso(row["cancel_at"]),
                "pending_plan_slug": row["pending_plan"]}

    def usage_filter(request: Request) -> queries.UsageFilter:
        params = request.query_params
        return queries.UsageFilter(start=when(params.get("from"), "from"), end=when(params.get("to"), "to"),
                                   account=params.get("account") or None, user_id=params.get("user") or None,
                                   workspace_id=params.get("workspace") or None)

    @routes.get("/admin/billing/usage", api_only=True)
    async def usage(request: Request) -> Response:
        """Totals per user, workspace, account, model, device, plan or status, per hour/day/month/year."""
        admin(request)
        return await usage_response(request, usage_filter(request), await fresh())

    @routes.get("/admin/billing/prompts", api_only=True)
    async def prompts(request: Request) -> Response:
        admin(request)
        return await usage_response(request, usage_filter(request), await fresh(), view="prompts")

    @routes.get("/admin/billing/accounts", api_only=True)
    async def accounts(request: Request) -> Response:
        admin(request)
        rows = await (await fresh()).fetch_all(select(tables.accounts).order_by(tables.accounts.c.account))
        return json_response({"accounts": [account_json(dict(zip(ACCOUNT_COLUMNS, r, strict=True))) for r in rows]})

    @routes.get("/admin/billing/accounts/{account}", api_only=True)
    async def one_account(request: Request) -> Response:
        admin(request)
        account = await account_of(request.path_params["account"])
        return json_response(account_json(await billing.refresh(account)))

    @routes.post("/admin/billing/accounts/{account}/credits", api_only=True)
    async def add_credits(request: Request) -> Response:
        """``{"amount": 10.0}`` (currency units) or ``{"amount_micros": ...}``; kind grant, topup or adjustment."""
        identity = admin(request)
        account = await account_of(request.path_params["account"])
        body = await json_body(request, required=True)
        kind = body.get("kind", "grant")
        if kind not in CREDIT_KINDS:
            raise fail(400, "invalid_request", f"kind must be one of {', '.join(CREDIT_KINDS)}")
        amount = _amount(body)
        if amount == 0 or (kind != "adjustment" and amount < 0):
            raise fail(400, "invalid_request", "amount must be positive (negative only for an adjustment)")
        note = text(body, "note", max_len=500)
        key = text(body, "idempotency_key", max_len=200)
        done = await store().write(lambda tx: ledger.credit(
            tx, billing.settings, account=account, amount=amount, kind=kind, now=time.time(),
            key=f"admin:{account}:{key}" if key else None, actor=identity.user_id, note=note))
        row = await billing.refresh(account)
        return json_response({"applied": done, **account_json(row)})

    @routes.put("/admin/billing/accounts/{account}/plan", api_only=True)
    async def set_plan(request: Request) -> Response:
        identity = admin(request)
        account = await account_of(request.path_params["account"])
        slug = text(await json_body(request, required=True), "plan_slug", required=True, max_len=200)
        plan = billing.settings.plan(slug)
        if plan is None:
            raise fail(400, "invalid_plan", f"There is no plan {slug!r}")
        await store().write(lambda tx: ledger.apply_plan(
            tx, billing.settings, account, plan, time.time(), op_id=f"admin-{time.time_ns()}",
            actor=identity.user_id, force_immediate=True, seats_of=billing.tables.seats))
        return json_response(account_json(await billing.refresh(account)))

    @routes.get("/admin/billing/ledger", api_only=True)
    async def ledger_view(request: Request) -> Response:
        admin(request)
        raw = request.query_params.get("account")
        account = await account_of(raw) if raw else None
        limit = int_param(request, "limit", 100, 1, 10_000)
        offset = int_param(request, "offset", 0, 0, 10**12)
        rows, total = await queries.ledger_rows(await fresh(), account, limit, offset)
        if request.query_params.get("format") == "csv":
            fields = ("id", "created", "account", "user_id", "kind", "bucket", "amount_micros", "prompt_id", "op_id",
                      "actor", "note", "key")
            return csv_response(queries.to_csv(rows, fields), "ledger.csv")
        return json_response({"entries": rows, "total": total, "limit": limit, "offset": offset})

    @routes.get("/admin/billing/ops", api_only=True)
    async def ops(request: Request) -> Response:
        admin(request)
        status = request.query_params.get("status")
        stmt = select(tables.ops).order_by(tables.ops.c.started.desc()).limit(1000)
        if status:
            stmt = stmt.where(tables.ops.c.status == status)
        rows = [dict(zip(OP_COLUMNS, r, strict=True)) for r in await store().db.fetch_all(stmt)]
        return json_response({"ops": [{**ledger.op_json(r), "account": r["account"], "user_id": r["user_id"],
                                       "kind": r["kind"], "params": json.loads(r["params"]),
                                       "provider": r["provider"]} for r in rows]})

    async def settle(request: Request, succeeded: bool) -> Response:
        identity = admin(request)
        op_id = request.path_params["id"]
        reason = None
        if not succeeded:
            reason = text(await json_body(request, required=False), "reason", max_len=500) or "Declined"
        op = await ledger.get_op(store().db, op_id)
        if op is None:
            raise fail(404, "not_found", "Billing operation not found")
        if op["status"] != "pending":
            raise fail(409, "conflict", f"The operation is already {op['status']}")
        op = await billing.settle_op(op_id, succeeded, error=reason, actor=identity.user_id)
        return json_response({**ledger.op_json(op), "account": op["account"], "kind": op["kind"]})

    @routes.post("/admin/billing/ops/{id}/approve", api_only=True)
    async def approve(request: Request) -> Response:
        return await settle(request, True)

    @routes.post("/admin/billing/ops/{id}/reject", api_only=True)
    async def reject(request: Request) -> Response:
        return await settle(request, False)


def _amount(body: dict[str, Any]) -> int:
    if "amount_micros" in body:
        value = body["amount_micros"]
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 10**15:
            raise fail(400, "invalid_request", "amount_micros must be an integer")
        return value
    value = body.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) < 10**9:
        raise fail(400, "invalid_request", "amount (in currency units) or amount_micros is required")
    return round(value * MICROS)
