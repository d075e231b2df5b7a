"""HTTP routes of webhooks: registered webhooks, the signing secret, and a job's delivery log.

* ``GET /api/webhooks``, ``POST /api/webhooks`` (``{"url", "events"?,
  "description"?, "enabled"?}`` → 201 with the webhook and its ``secret``,
  shown this once), ``GET``/``PATCH``/``DELETE /api/webhooks/{id}``,
  ``POST /api/webhooks/{id}/rotate-secret``.
* ``GET /api/webhooks/signing-secret``: the caller's secret for the
  webhooks named in ``extra_data.webhook`` (created on first use);
  ``POST /api/webhooks/signing-secret/rotate`` replaces it.
* ``GET /api/jobs/{id}/webhooks``: every delivery of a job with each attempt.

All of them act for the caller's identity only.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..http import HTTPError, empty, json_response, read_json
from ..routing import RouteTable
from . import signing
from .service import Webhooks, parse_events

MAX_DESCRIPTION = 500
MAX_PER_OWNER = 50


def _owner(request: Request) -> str:
    identity = getattr(request.state, "identity", None)
    return identity.key if identity is not None else "default"


def public(endpoint: dict[str, Any], secret: bool = False) -> dict[str, Any]:
    out = {"id": endpoint["id"], "url": endpoint["url"], "events": endpoint["events"],
           "description": endpoint["description"], "enabled": endpoint["enabled"],
           "created_at": endpoint["created"], "updated_at": endpoint["updated"],
           "secret_hint": endpoint["secret"][:10] + "…"}
    if secret:
        out["secret"] = endpoint["secret"]
    return out


def _delivery(d: dict[str, Any]) -> dict[str, Any]:
    return {"id": d["id"], "event": d["event"], "url": d["url"] or None, "webhook_id": d["endpoint_id"],
            "state": d["state"], "attempts": d["attempts"], "last_status": d["last_status"],
            "last_error": d["last_error"], "created_at": d["created"], "delivered_at": d["delivered_at"],
            "next_attempt_at": d["next_attempt"] if d["state"] == "pending" else None, "log": d["log"]}


def register(table: RouteTable, kernel: Any) -> None:
    def service() -> Webhooks:
        hooks = getattr(kernel, "webhooks", None)
        if hooks is None or not hooks.started:
            raise HTTPError(503, "Webhooks are not running", type="webhooks_unavailable")
        return hooks

    async def own(request: Request) -> dict[str, Any]:
        endpoint = await service().store.endpoint(request.path_params["webhook_id"])
        if endpoint is None or endpoint["owner"] != _owner(request):
            raise HTTPError(404, "Webhook not found", type="not_found")
        return endpoint

    def description(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
            raise HTTPError(400, f"description is a string of at most {MAX_DESCRIPTION} characters",
                            type="invalid_webhook")
        return value

    def enabled(value: Any) -> bool:
        if not isinstance(value, bool):
            raise HTTPError(400, "enabled is true or false", type="invalid_webhook")
        return value

    @table.get("/webhooks", api_only=True, openapi=DOCS["list"])
    async def list_webhooks(request: Request) -> Response:
        """The caller's registered webhooks (secrets are shown only when created or rotated)."""
        endpoints = await service().store.endpoints(_owner(request))
        return json_response({"webhooks": [public(e) for e in endpoints]})

    @table.post("/webhooks", api_only=True, openapi=DOCS["create"])
    async def create_webhook(request: Request) -> Response:
        """Register a webhook for every job the caller queues from now on."""
        hooks = service()
        body = await read_json(request, object_only=True)
        unknown = sorted(set(body) - {"url", "events", "description", "enabled"})
        if unknown:
            raise HTTPError(400, f"unknown fields: {', '.join(unknown)}", type="invalid_webhook")
        owner = _owner(request)
        if len(await hooks.store.endpoints(owner)) >= MAX_PER_OWNER:
            raise HTTPError(409, f"at most {MAX_PER_OWNER} webhooks per owner", type="too_many_webhooks")
        now = time.time()
        record = {"id": "wh_" + secrets.token_hex(12), "owner": owner, "url": hooks.check_url(body.get("url")),
                  "events": parse_events(body.get("events")), "secret": signing.new_secret(),
                  "description": description(body.get("description")),
                  "enabled": enabled(body.get("enabled", True)), "created": now, "updated": now}
        await hooks.store.add_endpoint(record)
        await hooks.refresh_endpoint_owners()
        return json_response(public(record, secret=True), 201)

    @table.get("/webhooks/signing-secret", api_only=True, openapi=DOCS["secret"])
    async def signing_secret(request: Request) -> Response:
        """The caller's secret for webhooks named in ``extra_data.webhook``."""
        secret = await service().store.owner_secret(_owner(request), signing.new_secret)
        return json_response({"secret": secret})

    @table.post("/webhooks/signing-secret/rotate", api_only=True, openapi=DOCS["secret"])
    async def rotate_signing_secret(request: Request) -> Response:
        """Replace the caller's signing secret; later attempts are signed with the new one."""
        secret = signing.new_secret()
        await service().store.set_owner_secret(_owner(request), secret)
        return json_response({"secret": secret})

    @table.get("/webhooks/{webhook_id}", api_only=True, openapi=DOCS["get"])
    async def get_webhook(request: Request) -> Response:
        """One registered webhook."""
        return json_response(public(await own(request)))

    @table.patch("/webhooks/{webhook_id}", api_only=True, openapi=DOCS["update"])
    async def update_webhook(request: Request) -> Response:
        """Change a webhook's URL, events, description or enabled flag."""
        hooks = service()
        endpoint = await own(request)
        body = await read_json(request, object_only=True)
        unknown = sorted(set(body) - {"url", "events", "description", "enabled"})
        if unknown:
            raise HTTPError(400, f"unknown fields: {', '.join(unknown)}", type="invalid_webhook")
        fields: dict[str, Any] = {}
        if "url" in body:
            fields["url"] = hooks.check_url(body["url"])
        if "events" in body:
            fields["events"] = parse_events(body["events"])
        if "description" in body:
            fields["description"] = description(body["description"])
        if "enabled" in body:
            fields["enabled"] = enabled(body["enabled"])
        if fields:
            await hooks.store.update_endpoint(endpoint["id"], fields)
            await hooks.refresh_endpoint_owners()
        return json_response(public(await hooks.store.endpoint(endpoint["id"]) or endpoint))

    @table.delete("/webhooks/{webhook_id}", api_only=True, openapi=DOCS["delete"])
    async def delete_webhook(request: Request) -> Response:
        """Delete a webhook; its deliveries still pending end unsent."""
        hooks = service()
        endpoint = await own(request)
        await hooks.store.delete_endpoint(endpoint["id"])
        await hooks.refresh_endpoint_owners()
        return empty(204)

    @table.post("/webhooks/{webhook_id}/rotate-secret", api_only=True, openapi=DOCS["rotate"])
    async def rotate_secret(request: Request) -> Response:
        """Give a webhook a new secret (shown in this answer only)."""
        hooks = service()
        endpoint = await own(request)
        secret = signing.new_secret()
        await hooks.store.update_endpoint(endpoint["id"], {"secret": secret})
        return json_response(public({**endpoint, "secret": secret}, secret=True))

    @table.get("/jobs/{job_id}/webhooks", api_only=True, openapi=DOCS["deliveries"])
    async def job_deliveries(request: Request) -> Response:
        """The delivery log of one of the caller's jobs: each delivery and its attempts."""
        from ..execution.job_routes import find_job

        hooks = service()
        prompt_id = request.path_params["job_id"]
        owner = _owner(request)
        deliveries = await hooks.store.job_deliveries(prompt_id, owner)
        if not deliveries and await hooks.store.job_owner(prompt_id) != owner and \
                await find_job(kernel.executor, owner, prompt_id) is None:
            raise HTTPError(404, f"Job {prompt_id} not found", type="not_found")
        return json_response({"prompt_id": prompt_id, "deliveries": [_delivery(d) for d in deliveries]})


# -- what /openapi.json says about these routes -------------------------------------------------------------

_EVENTS = {"type": "array", "items": {"type": "string", "enum": ["queued", "started", "output", "completed"]},
           "minItems": 1}
_WEBHOOK = {"type": "object", "required": ["id", "url", "events", "enabled"], "properties": {
    "id": {"type": "string"}, "url": {"type": "string", "format": "uri"}, "events": _EVENTS,
    "description": {"type": "string"}, "enabled": {"type": "boolean"}, "created_at": {"type": "number"},
    "updated_at": {"type": "number"}, "secret_hint": {"type": "string"},
    "secret": {"type": "string", "description": "Only when created or rotated"}}}
SCHEMAS = {
    "Webhook": _WEBHOOK,
    "WebhookList": {"type": "object", "required": ["webhooks"],
                    "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}}},
    "WebhookInput": {"type": "object", "additionalProperties": False, "properties": {
        "url": {"type": "string", "format": "uri"}, "events": _EVENTS, "description": {"type": "string"},
        "enabled": {"type": "boolean"}}},
    "SigningSecret": {"type": "object", "required": ["secret"], "properties": {"secret": {"type": "string"}}},
    "WebhookDeliveries": {"type": "object", "required": ["prompt_id", "deliveries"], "properties": {
        "prompt_id": {"type": "string"},
        "deliveries": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "event": {"type": "string"}, "url": {"type": ["string", "null"]},
            "webhook_id": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"}, "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]}, "created_at": {"type": "number"},
            "delivered_at": {"type": ["number", "null"]}, "next_attempt_at": {"type": ["number", "null"]},
            "log": {"type": "array", "items": {"type": "object", "properties": {
                "attempt": {"type": "integer"}, "at": {"type": "number"}, "status": {"type": ["integer", "null"]},
                "error": {"type": ["string", "null"]}, "duration_ms": {"type": "integer"}}}}}}}}},
}


def _doc(ok: str | None, status: str = "200", body: str | None = None, *errors: str) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK"} if ok is None else {
        "description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok}"}}}}}
    for code in errors:
        responses[code] = {"description": "Error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
    doc: dict[str, Any] = {"responses": responses, "components": {"schemas": SCHEMAS}}
    if body:
        doc["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return doc


DOCS = {
    "list": _doc("WebhookList"),
    "create": _doc("Webhook", "201", "WebhookInput", "400", "409"),
    "secret": _doc("SigningSecret"),
    "get": _doc("Webhook", "200", None, "404"),
    "update": _doc("Webhook", "200", "WebhookInput", "400", "404"),
    "delete": _doc(None, "204", None, "404"),
    "rotate": _doc("Webhook", "200", None, "404"),
    "deliveries": _doc("WebhookDeliveries", "200", None, "404"),
}
