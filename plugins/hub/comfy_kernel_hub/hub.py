"""The hub: profiles, labels, listing workflows, browsing, the template index, feedback.

A hub profile belongs to an owner key (one per workspace, or per user without
workspaces); its username is the public, immutable handle. Publishing to the
hub (``POST /api/hub/workflows``) is publishing a workflow (see
:mod:`comfy_kernel_hub.publishing`) with ``listed`` set and listing fields
(tags, models, thumbnails...). A local server has no moderation queue, so
listed workflows are ``approved`` at once.
"""

from __future__ import annotations

import base64
import datetime
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.http import json_response

from .common import PUBLIC, choice, fail, identity, int_param, iso, json_object, optional_str, owner_key
from .media import MediaStore
from .publishing import (
    asset_ids_of,
    asset_status,
    clean_file,
    publish_workflow,
    tracked_file_workflow,
    unpublish_share,
)
from .store import HubStore, dump, load, new_id
from .workflows import owned

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

USERNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
USERNAME_RULE = ("a username is 3 to 39 characters: lowercase letters, digits, '-' and '_', "
                 "starting and ending with a letter or digit")
RESERVED_USERNAMES = {"me", "check", "admin", "api", "hub", "workflows", "profiles", "assets", "settings",
                      "new", "null", "undefined", "comfy", "comfyui", "support", "help"}
STATUSES = ("pending", "approved", "rejected", "deprecated")
LABEL_TYPES = ("tag", "model", "custom_node")
THUMBNAIL_TYPES = ("image", "video", "image_comparison")
RESERVED_METADATA = {"extended_description", "meta_description", "how_to_use", "suggested_use_cases", "faq_items",
                     "content_template"}
FEEDBACK_TYPES = ("missing_nodes", "general", "missing_models")

# The labels a fresh server offers; more can be added in the hub_labels table.
DEFAULT_LABELS: list[tuple[str, str, str]] = [
    ("tag", "text-to-image", "Text to Image"), ("tag", "image-to-image", "Image to Image"),
    ("tag", "inpainting", "Inpainting"), ("tag", "outpainting", "Outpainting"), ("tag", "upscaling", "Upscaling"),
    ("tag", "controlnet", "ControlNet"), ("tag", "video-generation", "Video Generation"),
    ("tag", "audio", "Audio"), ("tag", "3d", "3D"), ("tag", "lora", "LoRA"), ("tag", "api-nodes", "API Nodes"),
    ("model", "sd1-5", "Stable Diffusion 1.5"), ("model", "sdxl", "SDXL"), ("model", "sd3-5", "SD 3.5"),
    ("model", "flux", "Flux"), ("model", "hunyuan", "Hunyuan"), ("model", "wan", "Wan"), ("model", "ltxv", "LTXV"),
    ("model", "qwen-image", "Qwen-Image"), ("model", "hidream", "HiDream"), ("model", "stable-audio", "Stable Audio"),
]


def username_problem(username: str) -> str | None:
    """Why ``username`` breaks the rules (None when it is valid)."""
    if not 3 <= len(username) <= 39 or not USERNAME_RE.match(username):
        return USERNAME_RULE
    if username in RESERVED_USERNAMES:
        return f"'{username}' is reserved"
    return None


def profile_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {"username": row["username"], "display_name": row["display_name"] or row["username"],
           "description": row["description"] or "", "website_urls": load(row["website_urls"], [])}
    if row.get("avatar_url"):
        out["avatar_url"] = row["avatar_url"]
    return out


def profile_summary(row: dict[str, Any] | None, username: str | None) -> dict[str, Any]:
    if row is None:
        return {"username": username or ""}
    out = {"username": row["username"], "display_name": row["display_name"] or row["username"]}
    if row.get("avatar_url"):
        out["avatar_url"] = row["avatar_url"]
    return out


def website_urls(body: dict[str, Any]) -> list[str] | None:
    urls = body.get("website_urls")
    if urls is None:
        return None
    if not isinstance(urls, list) or len(urls) > 10 or not all(
            isinstance(u, str) and re.match(r"^https?://\S+$", u) and len(u) <= 2000 for u in urls):
        raise fail(400, "INVALID_BODY", "website_urls must be up to 10 http(s) URLs")
    return urls


class Hub:
    """Hub operations over the store (profiles, labels, listings)."""

    def __init__(self, store: HubStore, media: MediaStore):
        self.store = store
        self.media = media

    async def seed_labels(self) -> None:
        await self.store.seed_labels(DEFAULT_LABELS)

    async def profile_by_name(self, username: str) -> dict[str, Any] | None:
        return await self.store.profile_by_name(username)

    async def profile_of(self, owner: str) -> dict[str, Any] | None:
        return await self.store.profile_of(owner)

    async def suggestions(self, username: str) -> list[str]:
        """Up to five free names near ``username``."""
        stem = re.sub(r"[^a-z0-9_-]", "", username.lower())[:33].strip("-_") or "user"
        stem = stem if len(stem) >= 3 else (stem + "user")[:33]
        candidates = [f"{stem}{n}" for n in range(1, 40)] + [f"{stem}-{n}" for n in range(100, 140)]
        out = []
        for name in candidates:
            if len(out) == 5:
                break
            if username_problem(name) is None and await self.profile_by_name(name) is None:
                out.append(name)
        return out

    async def labels(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if v is not None} for r in await self.store.labels(kind)]

    async def label_refs(self, kind: str, names: Any, field: str) -> list[dict[str, str]]:
        """Slugs of ``kind`` checked against the label table (400 naming the unknown ones)."""
        if names is None:
            return []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise fail(400, "INVALID_BODY", f"{field} must be a list of label names")
        known = {r["name"]: r["display_name"] for r in await self.labels(kind)}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise fail(400, "UNKNOWN_LABELS", f"unknown {kind} labels: {', '.join(unknown[:20])}",
                       unknown=unknown)
        return [{"name": n, "display_name": known[n]} for n in dict.fromkeys(names)]

    async def summary(self, share: dict[str, Any], *, detail: bool) -> dict[str, Any]:
        """``HubWorkflowSummary``, or ``HubWorkflowDetail`` with the JSON and assets."""
        fields = load(share["hub_fields"], {})
        profile = await self.profile_by_name(share["profile_username"]) if share["profile_username"] else None
        out: dict[str, Any] = {
            "share_id": share["share_id"], "name": share["name"], "description": fields.get("description", ""),
            "profile": profile_summary(profile, share["profile_username"]), "status": share["status"] or "pending",
            "publish_time": iso(share["publish_time"]), "tags": fields.get("tags_refs", []),
            "models": fields.get("models_refs", []), "custom_nodes": fields.get("custom_nodes_refs", []),
            "metadata": fields.get("metadata", {}), "sample_image_urls": fields.get("sample_image_urls", []),
        }
        for key in ("thumbnail_url", "thumbnail_type", "thumbnail_comparison_url", "tutorial_url"):
            if fields.get(key):
                out[key] = fields[key]
        if detail:
            out["workflow_id"] = share["workflow_id"]
            out["workflow_json"] = load(share["workflow_json"], {})
            out["assets"] = [{k: a.get(k) for k in ("id", "name", "preview_url", "storage_url", "model", "public")}
                             | {"in_library": False} for a in load(share["assets"], [])]
        return out

    def template_entry(self, share: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, Any]:
        """One ``index.json``-style entry, as the frontend's Templates dialog reads them."""
        fields = load(share["hub_fields"], {})
        metadata = fields.get("metadata", {})
        thumb = fields.get("thumbnail_url") or ""
        subtype = thumb.rsplit(".", 1)[-1].lower() if "." in thumb.rsplit("/", 1)[-1] else "webp"
        entry: dict[str, Any] = {
            "name": share["share_id"], "shareId": share["share_id"], "title": share["name"],
            "description": fields.get("description", ""),
            "mediaType": "video" if fields.get("thumbnail_type") == "video" else "image",
            "mediaSubtype": {"jpg": "jpeg"}.get(subtype, subtype),
            "tags": [t["display_name"] for t in fields.get("tags_refs", [])],
            "models": [m["display_name"] for m in fields.get("models_refs", [])],
            "requiresCustomNodes": [c["name"] for c in fields.get("custom_nodes_refs", [])],
            "date": datetime.datetime.fromtimestamp(share["publish_time"], tz=datetime.UTC).strftime("%Y-%m-%d"),
            "status": share["status"] or "pending", "profile": profile_summary(profile, share["profile_username"]),
        }
        if fields.get("thumbnail_type") == "image_comparison":
            entry["thumbnailVariant"] = "compareSlider"
        for src, dst in (("thumbnail_url", "thumbnailUrl"), ("thumbnail_comparison_url", "thumbnailComparisonUrl"),
                         ("tutorial_url", "tutorialUrl")):
            if fields.get(src):
                entry[dst] = fields[src]
        for key, cast in (("size", int), ("vram", int), ("open_source", bool)):
            if key in metadata:
                try:
                    entry["openSource" if key == "open_source" else key] = cast(metadata[key])
                except (TypeError, ValueError):
                    pass
        return entry


def statuses_param(request: Request) -> list[str]:
    raw = request.query_params.getlist("status")
    values = [v.strip() for item in raw for v in item.split(",") if v.strip()]
    bad = [v for v in values if v not in STATUSES]
    if bad:
        raise fail(400, "INVALID_QUERY", f"status must be among {', '.join(STATUSES)}")
    return values or ["approved"]


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("o:"):
            raise ValueError
        offset = int(text[2:])
        if offset < 0:
            raise ValueError
        return offset
    except (ValueError, UnicodeDecodeError):
        raise fail(400, "INVALID_CURSOR", "the pagination cursor is malformed") from None


def register(routes: RouteTable, hub: Hub) -> None:
    """Attach the ``/api/hub/*`` routes (but media, see :mod:`media`) and ``/api/feedback``."""
    store = hub.store

    async def own_profile(request: Request, username: str) -> dict[str, Any]:
        profile = await hub.profile_by_name(username)
        if profile is None:
            raise fail(404, "NOT_FOUND", f"no hub profile is named {username[:64]!r}")
        if profile["owner"] != owner_key(request):
            raise fail(403, "FORBIDDEN", "this hub profile belongs to another workspace")
        return profile

    # --- profiles ------------------------------------------------------------

    @routes.get("/hub/profiles/check", api_only=True)
    async def check_username(request: Request) -> Response:
        username = request.query_params.get("username")
        if username is None:
            raise fail(400, "INVALID_QUERY", "username is required")
        problem = username_problem(username)
        if problem:
            return json_response({"username": username, "available": False, "validation_error": problem})
        taken = await hub.profile_by_name(username)
        if taken is None or taken["owner"] == owner_key(request):
            return json_response({"username": username, "available": True})
        return json_response({"username": username, "available": False,
                              "suggestions": await hub.suggestions(username)})

    @routes.get("/hub/profiles/me", api_only=True)
    async def my_profile(request: Request) -> Response:
        profile = await hub.profile_of(owner_key(request))
        if profile is None:
            raise fail(404, "NOT_FOUND", "you have no hub profile yet")
        return json_response(profile_json(profile))

    @routes.post("/hub/profiles", api_only=True)
    async def create_profile(request: Request) -> Response:
        body = await json_object(request)
        who = identity(request)
        workspace_id, username = body.get("workspace_id"), body.get("username")
        if not isinstance(workspace_id, str) or not workspace_id:
            raise fail(400, "INVALID_BODY", "workspace_id is required")
        if who.workspace_id and workspace_id != who.workspace_id:
            raise fail(404, "NOT_FOUND", "you do not act in that workspace")
        if not isinstance(username, str):
            raise fail(400, "INVALID_USERNAME", "username is required")
        problem = username_problem(username)
        if problem:
            raise fail(400, "INVALID_USERNAME", problem)
        avatar = await hub.media.resolve(body.get("avatar_token"), owner_key(request), "avatar_token")
        urls = website_urls(body) or []
        row = {"username": username, "owner": owner_key(request),
               "display_name": optional_str(body, "display_name", max_len=200, status=400),
               "description": optional_str(body, "description", max_len=5000, status=400), "avatar_url": avatar,
               "website_urls": dump(urls), "created_at": time.time()}
        taken = await store.add_profile(row)
        if taken == "owner":
            raise fail(409, "PROFILE_EXISTS", "this workspace already has a hub profile")
        if taken == "username":
            raise fail(409, "USERNAME_TAKEN", f"the username {username!r} is taken")
        return json_response(profile_json(row), 201)

    @routes.get("/hub/profiles/{username}", api_only=True, extra=PUBLIC)
    async def public_profile(request: Request) -> Response:
        profile = await hub.profile_by_name(request.path_params["username"])
        if profile is None:
            raise fail(404, "NOT_FOUND", "profile not found")
        return json_response(profile_json(profile))

    @routes.patch("/hub/profiles/{username}", api_only=True)
    async def update_profile(request: Request) -> Response:
        body = await json_object(request)
        profile = await own_profile(request, request.path_params["username"])
        if "username" in body and body["username"] != profile["username"]:
            raise fail(400, "INVALID_BODY", "a username cannot be changed")
        fields: dict[str, Any] = {}
        for key, limit in (("display_name", 200), ("description", 5000)):
            if key in body:
                fields[key] = optional_str(body, key, max_len=limit, status=400)
        urls = website_urls(body)
        if urls is not None:
            fields["website_urls"] = dump(urls)
        token = body.get("avatar_token")
        if token == "":
            fields["avatar_url"] = None
        elif token is not None:
            fields["avatar_url"] = await hub.media.resolve(token, owner_key(request), "avatar_token")
        return json_response(profile_json(await store.update_profile(profile["username"], fields)))

    # --- labels ----------------------------------------------------------------

    @routes.get("/hub/labels", api_only=True)
    async def list_labels(request: Request) -> Response:
        kind = choice(request.query_params.get("type"), "type", LABEL_TYPES, None)
        return json_response({"labels": await hub.labels(kind)})

    # --- hub workflows -----------------------------------------------------------

    @routes.get("/hub/workflows/index", api_only=True, extra=PUBLIC)
    async def template_index(request: Request) -> Response:
        rows = await store.listed_shares(statuses=statuses_param(request), search=None, tag=None, username=None)
        profiles: dict[str, Any] = {}
        out = []
        for row in rows:
            name = row["profile_username"]
            if name and name not in profiles:
                profiles[name] = await hub.profile_by_name(name)
            out.append(hub.template_entry(row, profiles.get(name) if name else None))
        return json_response(out)

    @routes.get("/hub/workflows", api_only=True, extra=PUBLIC)
    async def browse(request: Request) -> Response:
        q = request.query_params
        limit = int_param(q.get("limit"), "limit", 20, 1, 100)
        detail = choice(q.get("detail"), "detail", ("true", "false", "1", "0"), "false") in ("true", "1")
        if detail and limit > 20:
            raise fail(400, "INVALID_QUERY", "detail=true allows limit up to 20")
        offset = decode_cursor(q.get("cursor"))
        username = q.get("username") or None
        if username and await hub.profile_by_name(username) is None:
            raise fail(404, "NOT_FOUND", "profile not found")
        rows = await store.listed_shares(statuses=statuses_param(request), search=q.get("search") or None,
                                         tag=q.get("tag") or None, username=username)
        page = rows[offset:offset + limit]
        body: dict[str, Any] = {"workflows": [await hub.summary(r, detail=detail) for r in page],
                                "next_cursor": encode_cursor(offset + limit) if offset + limit < len(rows) else ""}
        return json_response(body)

    @routes.post("/hub/workflows", api_only=True)
    async def publish_to_hub(request: Request) -> Response:
        body = await json_object(request)
        owner = owner_key(request)
        username, name = body.get("username"), body.get("name")
        if not isinstance(username, str) or not username:
            raise fail(400, "INVALID_BODY", "username is required")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise fail(400, "INVALID_BODY", "name is required (at most 200 characters)")
        asset_ids = asset_ids_of(body)
        profile = await hub.profile_by_name(username)
        if profile is None:
            raise fail(404, "NOT_FOUND", f"no hub profile is named {username[:64]!r}")
        if profile["owner"] != owner:
            raise fail(403, "FORBIDDEN", "that hub profile belongs to another workspace")
        thumbnail_type = body.get("thumbnail_type")
        if thumbnail_type is not None and thumbnail_type not in THUMBNAIL_TYPES:
            raise fail(400, "INVALID_BODY", f"thumbnail_type must be one of {', '.join(THUMBNAIL_TYPES)}")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise fail(400, "INVALID_BODY", "metadata must be an object")
        samples = body.get("sample_image_tokens_or_urls") or []
        if not isinstance(samples, list) or len(samples) > 20:
            raise fail(400, "INVALID_BODY", "sample_image_tokens_or_urls must be a list of up to 20 items")
        tutorial = optional_str(body, "tutorial_url", max_len=2000, status=400)
        tags = await hub.label_refs("tag", body.get("tags"), "tags")
        fields: dict[str, Any] = {
            "description": optional_str(body, "description", max_len=20000, status=400) or "",
            "tags": [r["name"] for r in tags],
            "tags_refs": tags,
            "models_refs": await hub.label_refs("model", body.get("models"), "models"),
            "custom_nodes_refs": await hub.label_refs("custom_node", body.get("custom_nodes"), "custom_nodes"),
            "metadata": {k: v for k, v in metadata.items() if k not in RESERVED_METADATA},
            "thumbnail_url": await hub.media.resolve(body.get("thumbnail_token_or_url"), owner,
                                                     "thumbnail_token_or_url"),
            "thumbnail_comparison_url": await hub.media.resolve(body.get("thumbnail_comparison_token_or_url"),
                                                                owner, "thumbnail_comparison_token_or_url"),
            "thumbnail_type": thumbnail_type or "image",
            "sample_image_urls": [await hub.media.resolve(s, owner, "sample_image_tokens_or_urls") for s in samples],
            "tutorial_url": tutorial,
        }
        if body.get("workflow_id"):  # a saved workflow (comfy-kernel addition)
            record = await owned(store, request, str(body["workflow_id"]))
        else:
            filename = body.get("workflow_filename")
            if not isinstance(filename, str) or not filename:
                raise fail(400, "INVALID_BODY", "workflow_filename (or workflow_id) is required")
            record = await tracked_file_workflow(request, store, clean_file(filename))
        share = await publish_workflow(request, store, record, asset_ids, listed=True, profile_username=username,
                                       hub_fields=fields, name=name.strip())
        return json_response(await hub.summary(share, detail=True))

    @routes.get("/hub/workflows/{share_id}", api_only=True, extra=PUBLIC)
    async def hub_detail(request: Request) -> Response:
        share = await store.share(request.path_params["share_id"])
        if share is None or not share["listed"]:
            raise fail(404, "NOT_FOUND", "hub workflow not found")
        out = await hub.summary(share, detail=True)
        out["assets"] = await asset_status(request, load(share["assets"], []))  # in_library for this caller
        return json_response(out)

    @routes.delete("/hub/workflows/{share_id}", api_only=True)
    async def hub_unpublish(request: Request) -> Response:
        await unpublish_share(request, store, request.path_params["share_id"])
        return Response(b"", status_code=204)

    # --- feedback ----------------------------------------------------------------

    @routes.post("/feedback", api_only=True)
    async def feedback(request: Request) -> Response:
        body = await json_object(request)
        kind = body.get("type")
        if kind not in FEEDBACK_TYPES:
            raise fail(400, "INVALID_BODY", f"type must be one of {', '.join(FEEDBACK_TYPES)}")
        rating = body.get("rating")
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
            raise fail(400, "INVALID_BODY", "rating must be an integer from 1 to 5")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise fail(400, "INVALID_BODY", "metadata must be an object")
        content = optional_str(body, "content", max_len=20000, status=400)
        feedback_id = new_id()
        await store.add_feedback({"id": feedback_id, "owner": owner_key(request), "type": kind, "content": content,
                                  "rating": rating, "metadata": dump(metadata), "created_at": time.time()})
        return json_response({"id": feedback_id, "type": kind, "status": "received"}, 201)
