"""The seed's eleven ``/api/billing/*`` operations, plus ``GET /api/billing/usage``.

Every operation acts on the caller's account: the workspace the request acts
in (``ws:<id>``, chosen and membership-checked by the multiuser plugin), or
the user without it. There is no way to name another account here, so
another user's workspace is out of reach: the multiuser plugin refuses a
``Comfy-Workspace`` the caller is not a member of, and an operation id of
another account answers 404. Changes (subscribe, cancel, resubscribe,
top-up, payment portal) need the workspace owner role where roles exist.

Errors are ``{"code", "message"}`` (the seed's ``ErrorResponse``).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import JSONTooDeep, check_json_content_type, json_response, loads_checked
from comfy_kernel.identity import Identity
from comfy_kernel.storage import Database

from . import ledger, queries
from .providers import Answer
from .service import Billing, fail, resolve
from .store import BillingStore
from .tables import ops

MAX_KEY = 200


def caller(request: Request) -> tuple[Identity, str]:
    identity = getattr(request.state, "identity", None) or Identity()
    return identity, identity.key


def require_owner(identity: Identity) -> None:
    if identity.extra.get("role") == "member":
        raise fail(403, "forbidden", "Only a workspace owner can change its billing")


async def json_body(request: Request, *, required: bool) -> dict[str, Any]:
    """The JSON object body, under the kernel's rules: one depth limit, JSON only from other origins."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise fail(400, "invalid_request", "A JSON object body is required")
        return {}
    check_json_content_type(request)
    try:
        value = loads_checked(raw)
    except JSONTooDeep as exc:
        raise fail(400, "json_too_deep", str(exc)) from None
    except ValueError:
        raise fail(400, "invalid_request", "The body is not valid JSON") from None
    if not isinstance(value, dict):
        raise fail(400, "invalid_request", "The body must be a JSON object")
    return value


def text(body: dict[str, Any], name: str, *, required: bool = False, max_len: int = 2048) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise fail(400, "invalid_request", f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > max_len or (required and not value.strip()):
        raise fail(400, "invalid_request", f"{name} must be a string of at most {max_len} characters")
    return value


def when(value: str | None, name: str) -> float | None:
    """An ISO 8601 time or epoch seconds from a query parameter."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(400, "invalid_request", f"{name} must be an ISO 8601 time or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = int(raw) if raw not in (None, "") else default
    except ValueError:
        value = default
    return min(max(value, low), high)


def plan_info(billing: Billing, plan: Any, account: str, seats: int, row: dict[str, Any] | None = None,
              current: bool = False) -> dict[str, Any]:
    price = plan.price_cents * (seats if plan.per_seat else 1)
    credits = plan.credits_cents * (seats if plan.per_seat else 1)
    out: dict[str, Any] = {"slug": plan.slug, "tier": plan.tier, "duration": plan.duration,
                           "price_cents": plan.price_cents, "credits_cents": plan.credits_cents,
                           "seat_summary": {"seat_count": seats if plan.per_seat else 1, "total_cost_cents": price,
                                            "total_credits_cents": credits}}
    if current and row is not None:
        out["period_start"] = ledger.iso(row["period_start"])
        out["period_end"] = ledger.iso(row["period_end"])
    return out


def register(routes: Any, billing: Billing) -> None:
    def store() -> BillingStore:
        if not billing.started or billing.store is None:
            raise fail(503, "unavailable", "Billing is not available; see the server log")
        return billing.store

    async def fresh() -> Database:
        store()
        return await billing.fresh()

    def availability(plan: Any, row: dict[str, Any], seats: int, kind: str | None) -> dict[str, Any]:
        if row["plan"] == plan.slug and row["status"] == "active":
            return {"available": False, "reason": "same_plan"}
        if plan.workspace == "team" and kind == "personal":
            return {"available": False, "reason": "requires_team"}
        if plan.workspace == "personal" and kind == "team":
            return {"available": False, "reason": "requires_personal"}
        if plan.per_seat and seats > plan.max_seats:
            return {"available": False, "reason": "exceeds_max_seats"}
        return {"available": True}

    async def seats_and_kind(account: str) -> tuple[int, str | None]:
        store()
        return await billing.tables.seats(account), await billing.tables.workspace_kind(account)

    @routes.get("/billing/balance", api_only=True)
    async def balance(request: Request) -> Response:
        store()
        _identity, account = caller(request)
        row = await billing.account(account)
        total = billing.balance(row)
        return json_response({"amount_micros": total, "currency": billing.settings.currency,
                              "cloud_credit_balance_micros": int(row["monthly_micros"]),
                              "prepaid_balance_micros": int(row["prepaid_micros"]),
                              "pending_charges_micros": 0, "effective_balance_micros": total})

    @routes.get("/billing/status", api_only=True)
    async def status(request: Request) -> Response:
        _identity, account = caller(request)
        row = await billing.account(account)
        plan = billing.active_plan(row)
        pending = await store().db.fetch_one(select(ops.c.id).where(
            ops.c.account == account, ops.c.kind == "subscribe", ops.c.status == "pending").limit(1))
        out: dict[str, Any] = {"is_active": plan is not None,
                               "has_funds": billing.balance(row) > billing.settings.min_balance_micros}
        if pending:
            out["billing_status"] = "pending_payment"
        else:
            out["billing_status"] = "paid" if plan is not None else "inactive"
        if plan is not None:
            out.update({"plan_slug": plan.slug, "subscription_tier": plan.tier,
                        "subscription_duration": plan.duration,
                        "subscription_status": "canceled" if row["status"] == "canceled" else "active"})
            if row["status"] == "canceled" and row["cancel_at"]:
                out["cancel_at"] = ledger.iso(row["cancel_at"])
            elif row["period_end"]:
                out["renewal_date"] = ledger.iso(row["period_end"])
        elif row["status"] == "ended":
            out["subscription_status"] = "ended"
        return json_response(out)

    @routes.get("/billing/plans", api_only=True)
    async def plans(request: Request) -> Response:
        _identity, account = caller(request)
        row = await billing.account(account)
        seats, kind = await seats_and_kind(account)
        out = []
        for plan in billing.settings.plans.values():
            info = plan_info(billing, plan, account, seats)
            info["max_seats"] = plan.max_seats
            info["availability"] = availability(plan, row, seats, kind)
            out.append(info)
        body: dict[str, Any] = {"plans": out}
        if billing.active_plan(row) is not None:
            body["current_plan_slug"] = row["plan"]
        return json_response(body)

    async def target_plan(body: dict[str, Any]) -> Any:
        slug = text(body, "plan_slug", required=True, max_len=200)
        plan = billing.settings.plan(slug)
        if plan is None:
            raise fail(400, "invalid_plan", f"There is no plan {slug!r}; see GET /api/billing/plans")
        return plan

    async def preview_of(account: str, plan: Any) -> tuple[dict[str, Any], dict[str, Any], int, str | None]:
        seats, kind = await seats_and_kind(account)

        async def job(tx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            row = await ledger.ensure_account(tx, billing.settings, account, seats_of=billing.tables.seats)
            return ledger.preview_change(billing.settings, row, plan, time.time(), seats), row

        preview, row = await store().write(job)
        return preview, row, seats, kind

    @routes.post("/billing/preview-subscribe", api_only=True)
    async def preview_subscribe(request: Request) -> Response:
        _identity, account = caller(request)
        plan = await target_plan(await json_body(request, required=True))
        preview, row, seats, kind = await preview_of(account, plan)
        avail = availability(plan, row, seats, kind)
        out: dict[str, Any] = {
            "allowed": preview["allowed"] and avail["available"], "transition_type": preview["transition_type"],
            "effective_at": ledger.iso(preview["effective_at"]), "is_immediate": preview["is_immediate"],
            "cost_today_cents": preview["cost_today_cents"], "cost_next_period_cents": preview["cost_next_period_cents"],
            "credits_today_cents": preview["credits_today_cents"],
            "credits_next_period_cents": preview["credits_next_period_cents"],
            "new_plan": plan_info(billing, plan, account, seats)}
        if not out["allowed"]:
            out["reason"] = preview["reason"] or avail.get("reason")
        if preview["current"] is not None:
            out["current_plan"] = plan_info(billing, preview["current"], account, seats, row, current=True)
        return json_response(out)

    @routes.post("/billing/subscribe", api_only=True)
    async def subscribe(request: Request) -> Response:
        identity, account = caller(request)
        require_owner(identity)
        body = await json_body(request, required=True)
        plan = await target_plan(body)
        key = text(body, "idempotency_key", max_len=MAX_KEY)
        return_url = text(body, "return_url")
        text(body, "cancel_url")
        preview, row, seats, kind = await preview_of(account, plan)
        avail = availability(plan, row, seats, kind)
        op, created = await billing.create_op(account, identity.user_id, "subscribe",
                                              {"plan_slug": plan.slug, "return_url": return_url}, key)
        if created:
            if not (preview["allowed"] and avail["available"]):
                reason = preview["reason"] or avail.get("reason")
                await billing.settle_op(op["id"], False, error=f"Not allowed: {reason}")
                raise fail(400, reason or "not_allowed", f"Subscribing to {plan.slug} is not allowed ({reason})")
            answer = await billing.call_provider("start_subscription", billing.public_op(op), plan,
                                                 preview["cost_today_cents"], return_url)
            op = await billing.follow(op, answer)
        else:
            answer = Answer(op["status"])
        if op["status"] == "failed":
            raise fail(400, "subscription_failed", op["error_message"] or "The subscription failed")
        out: dict[str, Any] = {"billing_op_id": op["id"]}
        if op["status"] == "succeeded":
            out["status"] = "subscribed"
            out["effective_at"] = ledger.iso(preview["effective_at"] if created else op["completed"])
        elif answer.status == "needs_payment_method" and answer.redirect_url:
            out.update({"status": "needs_payment_method", "payment_method_url": answer.redirect_url})
        else:
            out.update({"status": "pending_payment", "effective_at": ledger.iso(preview["effective_at"])})
        return json_response(out)

    @routes.post("/billing/subscription/cancel", api_only=True)
    async def cancel(request: Request) -> Response:
        identity, account = caller(request)
        require_owner(identity)
        key = text(await json_body(request, required=True), "idempotency_key", max_len=MAX_KEY)
        op, created = await billing.create_op(account, identity.user_id, "cancel", {}, key)
        if created:
            try:
                await store().write(lambda tx: _check_cancellable(tx, billing, account))
            except LookupError as exc:
                await billing.settle_op(op["id"], False, error=str(exc))
                raise fail(400, "no_active_subscription", str(exc)) from None
            answer = await billing.call_provider("cancel_subscription", billing.public_op(op))
            if answer.status == "failed":
                await billing.settle_op(op["id"], False, error=answer.error)
                raise fail(400, "cancel_failed", answer.error or "The payment provider refused the cancellation")
            try:
                await store().write(lambda tx: ledger.cancel(tx, billing.settings, account, time.time(), op["id"]))
            except LookupError as exc:
                await billing.settle_op(op["id"], False, error=str(exc))
                raise fail(400, "no_active_subscription", str(exc)) from None
            op = await billing.settle_op(op["id"], True)
        if op["status"] != "succeeded":
            raise fail(400, "no_active_subscription", op["error_message"] or "The cancellation failed")
        row = await billing.account(account)
        return json_response({"cancel_at": ledger.iso(row["cancel_at"] or row["period_end"]),
                              "billing_op_id": op["id"]})

    @routes.post("/billing/subscription/resubscribe", api_only=True)
    async def resubscribe(request: Request) -> Response:
        identity, account = caller(request)
        require_owner(identity)
        key = text(await json_body(request, required=True), "idempotency_key", max_len=MAX_KEY)
        op, created = await billing.create_op(account, identity.user_id, "resubscribe", {}, key)
        if created:
            answer = await billing.call_provider("resume_subscription", billing.public_op(op))
            try:
                if answer.status == "failed":
                    raise LookupError(answer.error or "The payment provider refused")
                await store().write(lambda tx: ledger.resume(tx, billing.settings, account, time.time(), op["id"]))
            except LookupError as exc:
                await billing.settle_op(op["id"], False, error=str(exc))
                raise fail(400, "not_in_grace_period", str(exc)) from None
            op = await billing.settle_op(op["id"], True)
        if op["status"] != "succeeded":
            raise fail(400, "not_in_grace_period", op["error_message"] or "Resubscribing failed")
        return json_response({"status": "active", "billing_op_id": op["id"],
                              "message": "The subscription continues; the cancellation was withdrawn."})

    @routes.post("/billing/topup", api_only=True)
    async def topup(request: Request) -> Response:
        identity, account = caller(request)
        require_owner(identity)
        body = await json_body(request, required=True)
        amount = body.get("amount_cents")
        settings = billing.settings
        if isinstance(amount, bool) or not isinstance(amount, int) \
                or not settings.min_topup_cents <= amount <= settings.max_topup_cents:
            raise fail(400, "invalid_amount", f"amount_cents must be an integer from {settings.min_topup_cents} "
                                              f"to {settings.max_topup_cents}")
        key = text(body, "idempotency_key", max_len=MAX_KEY)
        op, created = await billing.create_op(account, identity.user_id, "topup", {"amount_cents": amount}, key)
        if created:
            await store().write(lambda tx: ledger.add_event(tx, account, "topup.requested", {
                "op_id": op["id"], "amount_cents": amount, "user_id": identity.user_id}, time.time()))
            answer = await billing.call_provider("start_topup", billing.public_op(op), amount)
            op = await billing.follow(op, answer)
        amount = json.loads(op["params"]).get("amount_cents", amount)
        state = {"pending": "pending", "succeeded": "completed", "failed": "failed"}[op["status"]]
        return json_response({"topup_id": op["id"], "billing_op_id": op["id"], "status": state,
                              "amount_cents": amount})

    @routes.post("/billing/payment-portal", api_only=True)
    async def payment_portal(request: Request) -> Response:
        identity, account = caller(request)
        require_owner(identity)
        return_url = text(await json_body(request, required=False), "return_url")
        assert billing.provider is not None
        store()
        url = await resolve(billing.provider.portal_url(account, return_url))
        if not url:
            raise fail(400, "portal_unavailable", "No payment portal is configured; ask an administrator")
        return json_response({"url": url})

    @routes.get("/billing/ops/{id}", api_only=True)
    async def get_op(request: Request) -> Response:
        _identity, account = caller(request)
        op_id = request.path_params["id"]
        op = await ledger.get_op(store().db, op_id)
        if op is None or op["account"] != account:
            raise fail(404, "not_found", "Billing operation not found")
        return json_response(ledger.op_json(op))

    @routes.get("/billing/events", api_only=True)
    async def events(request: Request) -> Response:
        _identity, account = caller(request)
        page = int_param(request, "page", 1, 1, 10**9)
        limit = int_param(request, "limit", 20, 1, 100)
        return json_response(await queries.events_page(await fresh(), account, page, limit))

    @routes.get("/billing/usage", api_only=True)
    async def usage(request: Request) -> Response:
        """The caller's own usage (members of a team workspace see their own prompts only)."""
        identity, account = caller(request)
        filt = queries.UsageFilter(start=when(request.query_params.get("from"), "from"),
                                   end=when(request.query_params.get("to"), "to"), account=account)
        if identity.extra.get("role") == "member":
            filt.user_id = identity.user_id
        return await usage_response(request, filt, await fresh())


async def usage_response(request: Request, filt: queries.UsageFilter, database: Database,
                         view: str | None = None) -> Response:
    """Shared by the caller's and the administrators' usage views: a summary, or the prompts themselves."""
    params = request.query_params
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise fail(400, "invalid_request", "format must be json or csv")
    view = view or params.get("view", "summary")
    if view == "prompts":
        limit = int_param(request, "limit", 100, 1, 10_000)
        offset = int_param(request, "offset", 0, 0, 10**12)
        rows, total = await queries.usage_prompts(database, filt, limit, offset)
        if fmt == "csv":
            return csv_response(queries.to_csv(rows, queries.PROMPT_FIELDS), "usage-prompts.csv")
        return json_response({"prompts": rows, "total": total, "limit": limit, "offset": offset})
    if view != "summary":
        raise fail(400, "invalid_request", "view must be summary or prompts")
    group_by = params.get("group_by", "user")
    bucket = params.get("bucket", "day")
    if group_by not in queries.GROUPS:
        raise fail(400, "invalid_request", f"group_by must be one of {', '.join(queries.GROUPS)}")
    if bucket not in queries.BUCKETS:
        raise fail(400, "invalid_request", f"bucket must be one of {', '.join(queries.BUCKETS)}")
    rows = await queries.usage_summary(database, filt, group_by, bucket)
    if fmt == "csv":
        return csv_response(queries.to_csv(rows, queries.SUMMARY_FIELDS), f"usage-by-{group_by}.csv")
    return json_response({"group_by": group_by, "bucket": bucket, "from": ledger.iso(filt.start),
                          "to": ledger.iso(filt.end), "rows": rows})


def csv_response(body: str, filename: str) -> Response:
    return Response(body.encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def _check_cancellable(tx: Any, billing: Billing, account: str) -> None:
    row = await ledger.ensure_account(tx, billing.settings, account, seats_of=billing.tables.seats)
    if row["status"] != "active" or row["plan"] is None or row["plan"] == billing.settings.default_plan:
        raise LookupError("There is no active subscription to cancel")
