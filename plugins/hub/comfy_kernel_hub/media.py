"""Hub media (thumbnails, sample images, avatars) uploaded to signed, expiring, single-use URLs.

``POST /api/hub/assets/upload-url`` answers an ``upload_url`` on this server
(``PUT /api/hub/uploads/{upload_id}?expires=...&signature=...``), the
``public_url`` the file will have, and a ``token`` to hand to the profile or
publish request. The signature is an HMAC-SHA256 with a secret kept in the
server's user directory, over the upload id, its expiry and content type; the
token is an HMAC over the upload id and the caller's owner key, so a token
cannot be redeemed by anyone else. The URL accepts one successful PUT.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from comfy_kernel.http import json_response

from .common import PUBLIC, fail, json_object, owner_key
from .store import HubStore

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

# The canonical extension of each accepted type; anything else is refused.
CONTENT_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
                 "video/mp4": ".mp4", "video/webm": ".webm"}
UPLOAD_TTL = 15 * 60
MAX_MEDIA_BYTES = 50 * 1024 * 1024


class MediaStore:
    """Where hub media lives (``<user dir>/__hub/media``; ``__`` names are never user ids) and its secret."""

    def __init__(self, user_dir: str, store: HubStore, ttl: int = UPLOAD_TTL):
        self.ttl = ttl
        self.root = os.path.join(user_dir, "__hub")
        self.media_dir = os.path.join(self.root, "media")
        self.store = store
        self._secret: bytes | None = None

    @property
    def secret(self) -> bytes:
        """Created on first use with owner-only permissions, then reused across restarts."""
        if self._secret is None:
            os.makedirs(self.root, exist_ok=True)
            path = os.path.join(self.root, "secret.key")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                with open(path, "rb") as f:
                    self._secret = f.read()
            else:
                value = secrets.token_bytes(32)
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                self._secret = value
        return self._secret

    def sign(self, *parts: str) -> str:
        return hmac.new(self.secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()

    def token_for(self, upload_id: str, owner: str) -> str:
        return f"{upload_id}.{self.sign('token', upload_id, owner)}"

    async def redeem(self, token: str, owner: str) -> str:
        """The public URL of an uploaded file, for its uploader; 400 for anything else."""
        upload_id, _, signature = token.partition(".")
        if not signature or not hmac.compare_digest(signature, self.sign("token", upload_id, owner)):
            raise fail(400, "INVALID_TOKEN", "the media token is not valid for this caller")
        row = await self.store.upload(upload_id)
        if row is None or row["uploaded_at"] is None:
            raise fail(400, "INVALID_TOKEN", "nothing was uploaded for this media token")
        return public_url(row["stored_name"])

    async def resolve(self, value: Any, owner: str, field: str) -> str | None:
        """A ``*_token_or_url`` field: a token is redeemed, an existing hub media URL kept."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise fail(400, "INVALID_BODY", f"{field} must be a string")
        if value.startswith(("/api/hub/media/", "http://", "https://")):
            return value
        return await self.redeem(value, owner)


def public_url(stored_name: str) -> str:
    return f"/api/hub/media/{stored_name}"


def register(routes: RouteTable, media: MediaStore) -> None:
    """Attach the upload-URL, upload and media routes."""
    store = media.store

    @routes.post("/hub/assets/upload-url", api_only=True)
    async def upload_url(request: Request) -> Response:
        body = await json_object(request)
        filename, content_type = body.get("filename"), body.get("content_type")
        if not isinstance(filename, str) or not filename or len(filename) > 255:
            raise fail(400, "INVALID_BODY", "filename is required")
        if not isinstance(content_type, str) or content_type.lower() not in CONTENT_TYPES:
            raise fail(400, "UNSUPPORTED_CONTENT_TYPE",
                       f"content_type must be one of {', '.join(sorted(CONTENT_TYPES))}")
        content_type = content_type.lower()
        upload_id = secrets.token_urlsafe(16)
        stored_name = upload_id + CONTENT_TYPES[content_type]
        expires = int(time.time()) + media.ttl
        await store.add_upload({"token": upload_id, "owner": owner_key(request), "filename": filename,
                                "content_type": content_type, "stored_name": stored_name, "expires_at": expires})
        signature = media.sign("upload", upload_id, str(expires), content_type)
        base = str(request.base_url).rstrip("/")
        return json_response({
            "upload_url": f"{base}/api/hub/uploads/{upload_id}?expires={expires}&signature={signature}",
            "public_url": f"{base}{public_url(stored_name)}",
            "token": media.token_for(upload_id, owner_key(request)),
            "expires_at": expires, "content_type": content_type,
        })

    @routes.put("/hub/uploads/{upload_id}", api_only=True, extra=PUBLIC)
    async def upload(request: Request) -> Response:
        """The signed URL itself: the signature is the credential, not the caller's identity."""
        upload_id = request.path_params["upload_id"]
        q = request.query_params
        row = await store.upload(upload_id)
        expires = q.get("expires", "")
        if row is None or not expires.isdigit() or not hmac.compare_digest(
                q.get("signature", ""), media.sign("upload", upload_id, expires, row["content_type"])):
            raise fail(403, "INVALID_SIGNATURE", "the upload URL is not valid")
        if int(expires) != int(row["expires_at"]) or time.time() > row["expires_at"]:
            raise fail(403, "EXPIRED", "the upload URL has expired; ask for a new one")
        sent_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if sent_type and sent_type != row["content_type"]:
            raise fail(400, "CONTENT_TYPE_MISMATCH", f"this URL takes {row['content_type']}, not {sent_type}")
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
            if len(data) > MAX_MEDIA_BYTES:
                raise fail(413, "TOO_LARGE", "media files are limited to 50 MB")
        if not data:
            raise fail(400, "EMPTY_BODY", "the upload is empty")
        async with store.transaction() as tx:  # claim the URL first: a second PUT finds it used
            if not await store.claim_upload(tx, upload_id):
                raise fail(409, "ALREADY_USED", "this upload URL has already been used")
            os.makedirs(media.media_dir, exist_ok=True)
            tmp = os.path.join(media.media_dir, f".{row['stored_name']}.part")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(media.media_dir, row["stored_name"]))
        return Response(b"", status_code=200)

    @routes.get("/hub/media/{name}", api_only=True, extra=PUBLIC)
    async def get_media(request: Request) -> Response:
        name = request.path_params["name"]
        stem, ext = os.path.splitext(name)
        if not stem or name.startswith(".") or "/" in name or ext not in CONTENT_TYPES.values():
            raise fail(404, "NOT_FOUND", "media not found")
        path = os.path.join(media.media_dir, name)
        if not os.path.isfile(path):
            raise fail(404, "NOT_FOUND", "media not found")
        types = {v: k for k, v in CONTENT_TYPES.items()}
        return FileResponse(path, media_type=types[ext], headers={"Cache-Control": "public, max-age=86400"})
