"""Audit log of security events: sign-ins, failures, key and role changes.

Events go to the ``mu_audit`` table (readable by administrators at
``GET /api/admin/audit``) and to the ``comfy_kernel.audit`` logger. Details
never contain passwords, tokens or secret values: callers pass only ids,
names and reasons.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from sqlalchemy import select

from .store import Store, audit_log, now

log = logging.getLogger("comfy_kernel.audit")


class Audit:
    def __init__(self, store: Store):
        self.store = store

    async def record(self, event: str, *, outcome: str = "success", user_id: str | None = None,
                     actor_id: str | None = None, address: str | None = None, **detail: Any) -> None:
        """Append one event; failures to write are logged, never raised (auditing must not break sign-in)."""
        log.info("audit %s %s user=%s actor=%s address=%s %s", event, outcome, user_id, actor_id, address,
                 detail or "")
        try:
            await self.store.run(audit_log.insert().values(
                at=now(), event=event, outcome=outcome, user_id=user_id, actor_id=actor_id, address=address,
                detail=orjson.dumps(detail, default=str).decode()))
        except Exception:
            log.exception("could not write audit event %s", event)

    async def events(self, limit: int = 100, offset: int = 0, event: str | None = None) -> list[dict[str, Any]]:
        stmt = select(audit_log)
        if event:
            stmt = stmt.where(audit_log.c.event == event)
        rows = await self.store.all(stmt.order_by(audit_log.c.seq.desc()).limit(limit).offset(offset))
        from .store import iso

        return [{"seq": r["seq"], "at": iso(r["at"]), "event": r["event"], "outcome": r["outcome"],
                 "user_id": r["user_id"], "actor_id": r["actor_id"], "address": r["address"],
                 "detail": orjson.loads(r["detail"])} for r in rows]


def register(routes: Any, audit: Audit) -> None:
    """``GET /api/admin/audit?limit=&offset=&event=``: the newest events first (administrators only)."""
    from starlette.requests import Request
    from starlette.responses import Response

    from .context import fail, ok, require_admin

    @routes.get("/admin/audit", api_only=True)
    async def list_events(request: Request) -> Response:
        require_admin(request)
        try:
            limit = min(max(int(request.query_params.get("limit", 100)), 1), 1000)
            offset = max(int(request.query_params.get("offset", 0)), 0)
        except ValueError:
            raise fail(400, "invalid_request", "limit and offset must be integers") from None
        return ok({"events": await audit.events(limit, offset, request.query_params.get("event"))})
