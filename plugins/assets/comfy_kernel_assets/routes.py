"""HTTP routes of the asset library (both seed specs' asset operations).

Every handler works for ``request.state.identity.key`` only: own assets are
readable and writable, shared (seeded) assets are readable. Where the local
and the cloud spec differ the handler accepts both request shapes and
answers with the union of their fields.
"""

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from comfy_kernel.http import HTTPError, json_response, read_json

from .content import BadHash, normalize_hash
from .store import PUBLIC, AssetFilter, FilterError
from .validate import (
    clean_metadata,
    clean_mime,
    clean_name,
    clean_tags,
    fail,
    form_tags,
    guess_mime,
    metadata_filter,
    parse_bool,
    parse_int,
    parse_uuid,
    split_tag_params,
)

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

    from .library import AssetLibrary

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
STREAM_CHUNK = 256 * 1024


def owner_of(request: Request) -> str:
    return request.state.identity.key


def base_url(request: Request) -> str:
    """``scheme://host[:port]`` the request reached (absolute ``preview_url``s are built on it)."""
    return f"{request.url.scheme}://{request.url.netloc}"


async def body_object(request: Request) -> dict[str, Any]:
    try:
        return await read_json(request, object_only=True)
    except HTTPError as exc:  # invalid_json, json_too_deep, unsupported_media_type
        raise fail(exc.status, exc.type.upper(), exc.message) from None


def hash_param(value: Any, *, allow_sha256: bool = False) -> str:
    try:
        return normalize_hash(value, allow_sha256=allow_sha256)
    except BadHash as exc:
        raise fail(400, "INVALID_HASH", str(exc)) from None


def filter_from_query(request: Request) -> AssetFilter:
    q = request.query_params
    asset_hash = q.get("asset_hash")
    return AssetFilter(
        owner=owner_of(request),
        include_public=parse_bool(q.get("include_public"), "include_public", True),
        include_tags=split_tag_params(q.getlist("include_tags")),
        exclude_tags=split_tag_params(q.getlist("exclude_tags")),
        name_contains=(q.get("name_contains") or None),
        metadata=metadata_filter(q.get("metadata_filter")),
        asset_hash=hash_param(asset_hash, allow_sha256=True) if asset_hash else None,
    )


def register(routes: RouteTable, lib: AssetLibrary) -> None:
    """Attach every asset route to ``routes``; handlers close over ``lib``."""
    # Background-task routes live in tasks.py and seeding.py; they register
    # themselves from plugin.py so that each module keeps its own routes.
    store = lib.store

    async def visible(request: Request, asset_id: str) -> dict[str, Any]:
        record = await store.get(asset_id, owner_of(request))
        if record is None:
            raise fail(404, "NOT_FOUND", f"asset {asset_id[:64]!r} not found")
        return record

    async def writable(request: Request, asset_id: str) -> dict[str, Any]:
        record = await visible(request, asset_id)
        if record["owner"] == PUBLIC and owner_of(request) != PUBLIC:
            raise fail(403, "FORBIDDEN", "shared assets are read-only; import them to get your own copy")
        return record

    async def check_preview(request: Request, value: Any) -> str | None:
        if value is None or value == "":
            return None
        preview_id = parse_uuid(value, "preview_id")
        if await store.get(preview_id, owner_of(request)) is None:
            raise fail(404, "NOT_FOUND", "preview asset not found")
        return preview_id

    # --- create -----------------------------------------------------------

    @routes.post("/assets")
    async def upload(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("application/json"):
            from .tasks import create_from_url  # the cloud's JSON form: {url, name, ...}

            return await create_from_url(lib, request, await body_object(request))
        if not ctype.startswith("multipart/form-data"):
            raise fail(415, "UNSUPPORTED_MEDIA_TYPE", "send multipart/form-data (file upload) or JSON (url)")
        try:
            form = await request.form(max_files=1, max_fields=64)
        except Exception as exc:  # malformed multipart: Starlette's parser errors
            raise fail(400, "INVALID_MULTIPART", f"could not parse the multipart body: {exc}") from None
        try:
            return await _upload(request, form)
        finally:
            await form.close()

    async def _upload(request: Request, form: Any) -> Response:
        owner = owner_of(request)
        text = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        upload_file = form.get("file")
        if upload_file is not None and not isinstance(upload_file, UploadFile):
            raise fail(400, "INVALID_BODY", "file must be a file part")
        tags = form_tags([v for k, v in form.multi_items() if k == "tags" and isinstance(v, str)])
        user_metadata = clean_metadata(text.get("user_metadata"))
        mime_type = clean_mime(text.get("mime_type"))
        preview_id = await check_preview(request, text.get("preview_id"))
        claimed = hash_param(text["hash"]) if text.get("hash") else None
        wanted_id = parse_uuid(text["id"], "id") if text.get("id") else None
        if wanted_id:
            existing = await store.get(wanted_id, owner, include_public=False)
            if existing is not None:
                return json_response({**lib.to_json(existing, base_url(request)), "created_new": False}, 200)
            if await store.id_taken(wanted_id):
                raise fail(409, "CONFLICT", "that asset id is already in use")
        raw_name = text.get("name") or (upload_file.filename if upload_file else None)
        if upload_file is None:
            if claimed is None:
                raise fail(400, "MISSING_FILE", "a 'file' part (or a known 'hash') is required")
            if not await store.owner_knows_hash(owner, claimed):
                raise fail(404, "NOT_FOUND", "no content with that hash; upload the file")
            name = clean_name(raw_name or claimed.split(":")[1])
            new_id = await lib.create_reference(owner=owner, content_hash=claimed, name=name,
                                                mime_type=mime_type, tags=tags, user_metadata=user_metadata,
                                                preview_id=preview_id, source="upload")
            record = await store.get(new_id, owner)
            return json_response({**lib.to_json(record, base_url(request)), "created_new": False}, 201)
        name = clean_name(raw_name or "upload")
        try:
            tmp, content_hash, size = await asyncio.to_thread(
                lib.content.write_temp, upload_file.file, lib.kernel.max_upload_size)
        except OverflowError:
            raise fail(413, "PAYLOAD_TOO_LARGE", "the file is larger than the upload limit") from None
        if claimed and claimed != content_hash:
            lib.content.discard(tmp)
            raise fail(400, "HASH_MISMATCH", f"the file's hash is {content_hash}, not {claimed}")
        mime = mime_type or (upload_file.content_type if upload_file.content_type not in
                             (None, "", "application/octet-stream") else None) or guess_mime(name)
        new_id, created_new = await lib.create_from_temp(
            owner=owner, tmp=tmp, content_hash=content_hash, size=size, name=name, mime_type=mime, tags=tags,
            user_metadata=user_metadata, preview_id=preview_id, source="upload", asset_id=wanted_id)
        record = await store.get(new_id, owner)
        return json_response({**lib.to_json(record, base_url(request)), "created_new": created_new}, 201)

    @routes.post("/assets/from-hash")
    async def from_hash(request: Request) -> Response:
        body = await body_object(request)
        owner = owner_of(request)
        if "hash" not in body:
            raise fail(400, "INVALID_BODY", "hash is required")
        content_hash = hash_param(body["hash"], allow_sha256=True)
        tags = clean_tags(body.get("tags"))
        user_metadata = clean_metadata(body.get("user_metadata"))
        mime_type = clean_mime(body.get("mime_type"))
        name = clean_name(body["name"]) if body.get("name") is not None else content_hash.split(":")[1]
        if not await store.owner_knows_hash(owner, content_hash):
            raise fail(404, "NOT_FOUND", "no content with that hash")
        new_id = await lib.create_reference(owner=owner, content_hash=content_hash, name=name,
                                            mime_type=mime_type, tags=tags, user_metadata=user_metadata,
                                            source="from-hash")
        if new_id is None:
            raise fail(404, "NOT_FOUND", "no content with that hash")
        record = await store.get(new_id, owner)
        return json_response({**lib.to_json(record, base_url(request)), "created_new": False}, 201)

    @routes.head("/assets/hash/{hash}")
    async def head_hash(request: Request) -> Response:
        content_hash = hash_param(urllib.parse.unquote(request.path_params["hash"]), allow_sha256=True)
        found = await store.owner_knows_hash(owner_of(request), content_hash)
        return Response(b"", status_code=200 if found else 404)

    # --- read -------------------------------------------------------------

    @routes.get("/assets")
    async def list_assets(request: Request) -> Response:
        q = request.query_params
        flt = filter_from_query(request)
        sort = q.get("sort") or "created_at"
        if sort not in ("name", "created_at", "updated_at", "size", "last_access_time", "file_size"):
            raise fail(400, "INVALID_QUERY", "sort must be one of name, created_at, updated_at, size, "
                                             "last_access_time")
        order = (q.get("order") or "desc").lower()
        if order not in ("asc", "desc"):
            raise fail(400, "INVALID_QUERY", "order must be asc or desc")
        limit = parse_int(q.get("limit"), "limit", 20, 1, 500)
        offset = parse_int(q.get("offset"), "offset", 0, 0, 2**31)
        try:
            rows, total, cursor = await store.list(flt, sort=sort, order=order, limit=limit, offset=offset,
                                                   after=q.get("after") or None)
        except FilterError as exc:
            raise fail(400, "INVALID_QUERY", str(exc)) from None
        has_more = cursor is not None
        body: dict[str, Any] = {"assets": [lib.to_json(r, base_url(request)) for r in rows], "total": total,
                                "has_more": has_more}
        if cursor:
            body["next_cursor"] = cursor
        return json_response(body)

    @routes.get("/assets/tags/refine")
    async def refine(request: Request) -> Response:
        flt = filter_from_query(request)
        limit = parse_int(request.query_params.get("limit"), "limit", 100, 1, 1000)
        try:
            counts = await store.tag_histogram(flt, limit)
        except FilterError as exc:
            raise fail(400, "INVALID_QUERY", str(exc)) from None
        return json_response({"tag_counts": counts})

    @routes.get("/tags")
    async def list_tags(request: Request) -> Response:
        q = request.query_params
        limit = parse_int(q.get("limit"), "limit", 100, 1, 1000)
        offset = parse_int(q.get("offset"), "offset", 0, 0, 2**31)
        order = q.get("order") or "count_desc"
        if order not in ("count_desc", "name_asc"):
            raise fail(400, "INVALID_QUERY", "order must be count_desc or name_asc")
        include_public = parse_bool(q.get("include_public"), "include_public", True)
        parse_bool(q.get("include_zero"), "include_zero", True)  # tags exist only on assets: no zeros
        rows, total = await store.list_tags(owner_of(request), include_public=include_public,
                                            prefix=q.get("prefix"), search=q.get("search"), order=order,
                                            limit=limit, offset=offset)
        tags = [{"name": name, "count": count} for name, count in rows]
        return json_response({"tags": tags, "total": total, "has_more": offset + len(tags) < total})

    @routes.get("/assets/{id}")
    async def get_asset(request: Request) -> Response:
        record = await visible(request, request.path_params["id"])
        await store.touch(record["id"])
        return json_response(lib.to_json(record, base_url(request)))

    @routes.get("/assets/{id}/content")
    async def content(request: Request) -> Response:
        record = await visible(request, request.path_params["id"])
        path = await lib.file_for(record)
        if path is None:
            raise fail(404, "CONTENT_MISSING", "the asset's content is not available")
        size = os.path.getsize(path)
        mime = record.get("mime_type") or guess_mime(record["name"])
        disposition = "inline" if parse_bool(request.query_params.get("inline"), "inline", False) else "attachment"
        quoted = urllib.parse.quote(record["name"])
        headers = {"Accept-Ranges": "bytes",
                   "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
                   "ETag": f'"{record["hash"]}"', "Cache-Control": "private, max-age=31536000, immutable"}
        start, end, status = 0, size - 1, 200
        header = request.headers.get("range")
        if header:
            span = _parse_range(header, size)
            if span is None:
                return Response(b"", status_code=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        await store.touch(record["id"])
        if request.method == "HEAD":
            return Response(b"", status_code=status, headers=headers, media_type=mime)
        return StreamingResponse(_read_span(path, start, end), status_code=status, headers=headers,
                                 media_type=mime)

    # --- update -----------------------------------------------------------

    @routes.put("/assets/{id}")
    async def update(request: Request) -> Response:
        body = await body_object(request)
        record = await writable(request, request.path_params["id"])
        fields: dict[str, Any] = {}
        if "name" in body:
            fields["name"] = clean_name(body["name"])
        if "user_metadata" in body:
            fields["user_metadata"] = clean_metadata(body["user_metadata"])
        if "mime_type" in body:
            fields["mime_type"] = clean_mime(body["mime_type"])
        if "preview_id" in body:
            preview = await check_preview(request, body["preview_id"])
            if preview == record["id"]:
                preview = None
            fields["preview_id"] = preview
        if not fields:
            raise fail(400, "INVALID_BODY", "nothing to update: send name, user_metadata, mime_type or preview_id")
        await store.update(record["id"], fields)
        return json_response(lib.to_json(await store.get(record["id"], owner_of(request)), base_url(request)))

    @routes.delete("/assets/{id}")
    async def delete(request: Request) -> Response:
        delete_content = parse_bool(request.query_params.get("delete_content"), "delete_content", False)
        record = await writable(request, request.path_params["id"])
        await lib.delete(record, delete_content)
        return Response(b"", status_code=204)

    # --- tags -------------------------------------------------------------

    async def tag_body(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await body_object(request)
        return body, await writable(request, request.path_params["id"])

    @routes.post("/assets/{id}/tags")
    async def add_tags(request: Request) -> Response:
        body, record = await tag_body(request)
        tags = clean_tags(body.get("tags"))
        if not tags:
            raise fail(400, "INVALID_BODY", "tags must list at least one tag")
        added, present = await store.add_tags(record["id"], tags)
        return json_response({"added": added, "already_present": present,
                              "total_tags": await store.tags_of(record["id"])})

    @routes.delete("/assets/{id}/tags")
    async def remove_tags(request: Request) -> Response:
        body, record = await tag_body(request)
        tags = clean_tags(body.get("tags"))
        if not tags:
            raise fail(400, "INVALID_BODY", "tags must list at least one tag")
        removed, absent = await store.remove_tags(record["id"], tags)
        return json_response({"removed": removed, "not_present": absent,
                              "total_tags": await store.tags_of(record["id"])})

    @routes.put("/assets/{id}/tags")
    async def replace_tags(request: Request) -> Response:
        """Cloud form ``{add, remove}``; ``{tags}`` replaces the whole set."""
        body, record = await tag_body(request)
        if "tags" in body:
            wanted = clean_tags(body["tags"])
            current = await store.tags_of(record["id"])
            add = [t for t in wanted if t not in current]
            remove = [t for t in current if t not in wanted]
        else:
            add, remove = clean_tags(body.get("add"), "add"), clean_tags(body.get("remove"), "remove")
            if not add and not remove:
                raise fail(400, "INVALID_BODY", "send tags, or add and/or remove with at least one tag")
        removed, absent = await store.remove_tags(record["id"], remove) if remove else ([], [])
        added, present = await store.add_tags(record["id"], add) if add else ([], [])
        return json_response({"added": added, "already_present": present, "removed": removed,
                              "not_present": absent, "total_tags": await store.tags_of(record["id"])})

    # --- import of shared assets ------------------------------------------

    @routes.post("/assets/import")
    async def import_published(request: Request) -> Response:
        body = await body_object(request)
        ids = body.get("published_asset_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 500:
            raise fail(400, "INVALID_BODY", "published_asset_ids must be a list of at most 500 ids")
        owner = owner_of(request)
        sources = []
        for asset_id in dict.fromkeys(ids):
            record = await store.get(asset_id, PUBLIC, include_public=False)
            if record is None:
                raise fail(400, "INVALID_ASSETS", f"{asset_id[:64]!r} is not a published asset")
            sources.append(record)
        imported = []
        for record in sources:
            own = await store.list(AssetFilter(owner=owner, include_public=False, asset_hash=record["hash"],
                                               name_contains=None), limit=1)
            if own[0]:
                imported.append(lib.to_json(own[0][0], base_url(request)))
                continue
            new_id = await lib.create_reference(
                owner=owner, content_hash=record["hash"], name=record["name"], mime_type=record["mime_type"],
                tags=record["tags"], user_metadata={}, source="import")
            imported.append(lib.to_json(await store.get(new_id, owner), base_url(request)))
        return json_response({"assets": imported})


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` span clipped to the file, or None when unsatisfiable."""
    m = RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        return None
    if not m.group(1):
        length = int(m.group(2))
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


async def _read_span(path: str, start: int, end: int):
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = await asyncio.to_thread(f.read, min(STREAM_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
