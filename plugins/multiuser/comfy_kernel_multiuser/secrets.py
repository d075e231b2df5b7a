"""User secrets (provider API keys): encrypted at rest, never returned after creation.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, authenticated)
under a key from configuration (``--secrets-key-file``, ``--secrets-key`` or
``COMFY_KERNEL_SECRETS_KEY``): a Fernet key is used as is, anything else is
treated as a passphrase and stretched with HKDF-SHA256. Without a key the
routes answer 503, as the seed's "feature disabled" case.

A secret belongs to one user in one workspace; only that user sees its
metadata, and only that user's prompts receive its value (see
:mod:`.prompts`): a secret whose provider is ``comfy_org`` becomes the
``api_key_comfy_org`` entry of ``extra_data``, which ComfyUI passes to nodes
through the ``API_KEY_COMFY_ORG`` hidden input.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, select, update
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.routing import RouteTable

from .context import MultiUser, client_address, fail, json_body, ok, require_identity, text_field
from .store import hot, is_conflict, iso, new_id, now, user_secrets

#: Providers whose secret is handed to nodes, and the ``extra_data`` key ComfyUI reads it from.
PROVIDER_EXTRA_DATA = {"comfy_org": "api_key_comfy_org", "comfyorg": "api_key_comfy_org"}
MAX_VALUE = 16 * 1024

X = user_secrets.c
_VALUE = hot(select(X.id, X.ciphertext).where(X.user_id == bindparam("user"), X.workspace_id == bindparam("ws"),
                                              X.provider == bindparam("provider"))
             .order_by(X.updated_at.desc()).limit(1))


class SecretBox:
    """Authenticated encryption of secret values and private keys."""

    def __init__(self, key: str):
        self.fernet = Fernet(self._fernet_key(key))

    @staticmethod
    def _fernet_key(key: str) -> bytes:
        raw = key.strip().encode("utf-8")
        try:
            if len(base64.urlsafe_b64decode(raw)) == 32:
                return raw
        except (binascii.Error, ValueError):
            pass
        if len(raw) < 16:
            raise ValueError("the secrets key is too short: use a Fernet key or a passphrase of 16+ characters")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"comfy-kernel-multiuser",
                       info=b"secrets-at-rest").derive(raw)
        return base64.urlsafe_b64encode(derived)

    def encrypt(self, value: bytes) -> bytes:
        return self.fernet.encrypt(value)

    def decrypt(self, token: bytes) -> bytes:
        return self.fernet.decrypt(token)


def secret_json(row: Any) -> dict[str, Any]:
    out = {"id": row["id"], "name": row["name"], "created_at": iso(row["created_at"]),
           "updated_at": iso(row["updated_at"])}
    if row["provider"]:
        out["provider"] = row["provider"]
    if row["last_used_at"] is not None:
        out["last_used_at"] = iso(row["last_used_at"])
    return out


def read_value(mu: MultiUser, user_id: str, workspace_id: str, provider: str) -> tuple[str, str] | None:
    """(id, plaintext) of the caller's newest secret for ``provider`` in the workspace (synchronous)."""
    if mu.secret_box is None:
        return None
    row = mu.store.read_one(_VALUE, {"user": user_id, "ws": workspace_id, "provider": provider})
    if row is None:
        return None
    try:
        return row["id"], mu.secret_box.decrypt(row["ciphertext"]).decode("utf-8")
    except InvalidToken:
        return None


def register(routes: RouteTable, mu: MultiUser) -> None:
    def box() -> SecretBox:
        if mu.secret_box is None:
            raise fail(503, "secrets_disabled", "Secrets are disabled: the server has no secrets key configured")
        return mu.secret_box

    async def owned(request: Request) -> Any:
        identity = require_identity(request)
        row = await mu.store.one(select(user_secrets).where(X.id == request.path_params["secret_id"],
                                                            X.workspace_id == identity.workspace_id))
        if row is None:
            raise fail(404, "not_found", "Secret not found")
        if row["user_id"] != identity.user_id:
            raise fail(403, "forbidden", "You do not own this secret")
        return row

    @routes.get("/secrets")
    async def list_secrets(request: Request) -> Response:
        identity = require_identity(request)
        box()
        rows = await mu.store.all(select(user_secrets).where(X.user_id == identity.user_id,
                                                             X.workspace_id == identity.workspace_id)
                                  .order_by(X.created_at))
        return ok({"data": [secret_json(r) for r in rows]})

    @routes.post("/secrets")
    async def create_secret(request: Request) -> Response:
        identity = require_identity(request)
        sealed = box()
        body = await json_body(request)
        name = text_field(body, "name", max_len=255)
        provider = text_field(body, "provider", required=False, max_len=64)
        value = body.get("secret_value")
        if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
            raise fail(422, "validation_error", "secret_value must be a non-empty string")
        if provider:
            provider = provider.lower()
            clash = await mu.store.one(select(X.id).where(X.user_id == identity.user_id,
                                                          X.workspace_id == identity.workspace_id,
                                                          X.provider == provider))
            if clash:
                raise fail(409, "conflict", "A secret for this provider already exists")
        secret_id, t = new_id(), now()
        try:
            await mu.store.run(user_secrets.insert().values(
                id=secret_id, user_id=identity.user_id, workspace_id=identity.workspace_id, name=name,
                provider=provider, ciphertext=sealed.encrypt(value.encode("utf-8")), created_at=t, updated_at=t))
        except Exception as exc:
            if not is_conflict(exc):
                raise
            raise fail(409, "conflict", "A secret with this name already exists") from None
        await mu.audit.record("secret.create", user_id=identity.user_id, address=client_address(request),
                              secret_id=secret_id, provider=provider)
        return ok(secret_json(await mu.store.one(select(user_secrets).where(X.id == secret_id), fresh=True)), 201)

    @routes.get("/secrets/{secret_id}")
    async def get_secret(request: Request) -> Response:
        box()
        return ok(secret_json(await owned(request)))

    @routes.patch("/secrets/{secret_id}")
    async def update_secret(request: Request) -> Response:
        sealed = box()
        row = await owned(request)
        body = await json_body(request)
        name = text_field(body, "name", required=False, max_len=255)
        value = body.get("secret_value")
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_VALUE):
            raise fail(400, "invalid_request", "secret_value must be a non-empty string")
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if value is not None:
            changes["ciphertext"] = sealed.encrypt(value.encode("utf-8"))
        try:
            await mu.store.run(update(user_secrets).where(X.id == row["id"]).values(**changes, updated_at=now()))
        except Exception as exc:
            if not is_conflict(exc):
                raise
            raise fail(409, "conflict", "A secret with this name already exists") from None
        await mu.audit.record("secret.update", user_id=row["user_id"], address=client_address(request),
                              secret_id=row["id"], value_changed=value is not None)
        return ok(secret_json(await mu.store.one(select(user_secrets).where(X.id == row["id"]), fresh=True)))

    @routes.delete("/secrets/{secret_id}")
    async def delete_secret(request: Request) -> Response:
        box()
        row = await owned(request)
        await mu.store.run(delete(user_secrets).where(X.id == row["id"]))
        await mu.audit.record("secret.delete", user_id=row["user_id"], address=client_address(request),
                              secret_id=row["id"])
        return Response(status_code=204)
