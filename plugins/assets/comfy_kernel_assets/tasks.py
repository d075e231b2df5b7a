"""Background tasks: URL downloads, ZIP exports; plus remote-metadata and from-workflow.

Every task is a row in ``assets_tasks`` before any work starts, and each state
change is written through, so ``/api/tasks`` survives a restart; a task that
was ``created``/``running`` when the process died is marked failed at the next
start-up (see ``AssetStore.fail_interrupted_tasks``). Progress goes to the
owner's own WebSocket clients only, as ``asset_download`` / ``asset_export``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.message
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from comfy_kernel.http import json_response

from .content import CHUNK
from .library import iso
from .routes import base_url, body_object, hash_param, owner_of
from .store import AssetFilter
from .validate import clean_metadata, clean_name, clean_tags, fail, guess_mime, parse_int, parse_uuid

if TYPE_CHECKING:  # pragma: no cover
    from comfy_kernel.routing import RouteTable

    from .library import AssetLibrary

EXPORT_NAME_RE = re.compile(r"^assets-[0-9a-f]{8}-\d{8}T\d{6}\.zip$")
STRATEGIES = ("group_by_job_time", "group_by_job_id", "preserve", "asset_id")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".pt2", ".onnx")
FILE_LIKE = re.compile(r"^[^\n\r\x00]{1,500}\.[A-Za-z0-9]{1,12}$")
PROGRESS_EVERY = 0.2
USER_AGENT = "comfy-kernel-assets/0.1"


def send_to_owner(lib: AssetLibrary, owner: str, event: str, data: dict[str, Any]) -> None:
    """Send a ws message to every socket of ``owner`` (never to other users)."""
    ws = lib.kernel.ws
    for sid, client in list(ws.clients.items()):
        identity = getattr(client, "identity", None)
        if identity is not None and getattr(identity, "key", None) == owner:
            ws.send(event, data, sid)


def task_json(task: dict[str, Any]) -> dict[str, Any]:
    out = {"id": task["id"], "idempotency_key": task["idempotency_key"], "task_name": task["task_name"],
           "payload": task["payload"], "status": task["status"], "create_time": iso(task["create_time"]),
           "update_time": iso(task["update_time"])}
    for key in ("started_at", "completed_at"):
        if task.get(key):
            out[key] = iso(task[key])
    if task.get("result") is not None:
        out["result"] = task["result"]
    if task.get("error_message"):
        out["error_message"] = task["error_message"]
    return out


def check_url(value: Any, field: str = "source_url") -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(400, "INVALID_BODY", f"{field} is required")
    url = value.strip()
    if len(url) > 4096:
        raise fail(400, "INVALID_BODY", f"{field} is too long")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(400, "INVALID_URL", f"{field} must be an http(s) URL")
    return url


def _filename_from(url: str, headers: Any) -> str | None:
    disposition = headers.get("Content-Disposition") if headers else None
    if disposition:
        msg = email.message.Message()
        msg["content-disposition"] = disposition
        name = msg.get_filename()
        if name:
            return name
    tail = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return tail or None


# --- downloads ---------------------------------------------------------------


def _fetch(lib: AssetLibrary, url: str, progress: Any) -> tuple[str, str, int, str | None, str | None]:
    """Download ``url`` into a hashed temp file (blocking); return tmp, hash, size, name, type."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=60) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        name = _filename_from(url, resp.headers)
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip() or None
        done = 0
        last = 0.0

        def chunks():
            nonlocal done, last
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    progress(done, total)
                yield chunk

        tmp, content_hash, size = lib.content.write_temp(chunks(), lib.kernel.max_upload_size)
    if total and size != total:
        lib.content.discard(tmp)
        raise OSError(f"download ended after {size} of {total} bytes")
    return tmp, content_hash, size, name, ctype


async def run_download(lib: AssetLibrary, task: dict[str, Any], owner: str) -> None:
    payload = task["payload"]
    loop = asyncio.get_running_loop()
    name = payload.get("name") or "download"
    state = {"task_id": task["id"], "asset_name": name, "bytes_total": 0, "bytes_downloaded": 0,
             "progress": 0.0, "status": "running"}

    def progress(done: int, total: int) -> None:
        state.update(bytes_downloaded=done, bytes_total=total, progress=(done / total) if total else 0.0)
        loop.call_soon_threadsafe(send_to_owner, lib, owner, "asset_download", dict(state))

    await lib.store.update_task(task["id"], status="running", started_at=time.time())
    send_to_owner(lib, owner, "asset_download", dict(state))
    try:
        tmp, content_hash, size, remote_name, ctype = await asyncio.to_thread(
            _fetch, lib, payload["source_url"], progress)
        expected = payload.get("hash")
        if expected and expected != content_hash:
            lib.content.discard(tmp)
            raise ValueError(f"hash mismatch: expected {expected}, got {content_hash}")
        if not payload.get("name") and remote_name:
            try:
                name = clean_name(remote_name)
            except Exception:
                name = "download"
        asset_id, created_new = await lib.create_from_temp(
            owner=owner, tmp=tmp, content_hash=content_hash, size=size, name=name,
            mime_type=payload.get("mime_type") or (ctype if ctype and ctype != "application/octet-stream"
                                                   else guess_mime(name)),
            tags=payload.get("tags") or [], user_metadata=payload.get("user_metadata") or {},
            preview_id=payload.get("preview_id"), source=payload["source_url"])
    except asyncio.CancelledError:
        await lib.store.update_task(task["id"], status="failed", error_message="cancelled at shutdown",
                                    completed_at=time.time())
        raise
    except Exception as exc:
        message = _describe(exc)
        await lib.store.update_task(task["id"], status="failed", error_message=message, completed_at=time.time())
        send_to_owner(lib, owner, "asset_download", {**state, "asset_name": name, "status": "failed",
                                                      "error": message})
        return
    result = {"asset_id": asset_id, "created_new": created_new, "asset_hash": content_hash, "size": size}
    await lib.store.update_task(task["id"], status="completed", result=result, completed_at=time.time())
    send_to_owner(lib, owner, "asset_download", {**state, "asset_name": name, "bytes_total": size,
                                                  "bytes_downloaded": size, "progress": 1.0,
                                                  "status": "completed", "asset_id": asset_id})


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"could not reach the URL: {exc.reason}"
    if isinstance(exc, OverflowError):
        return "the file is larger than the upload limit"
    return str(exc) or type(exc).__name__


async def start_download(lib: AssetLibrary, request: Request, body: dict[str, Any], url_field: str) -> Response:
    owner = owner_of(request)
    url = check_url(body.get(url_field), url_field)
    expected = body.get("hash") or body.get("expected_hash")
    payload: dict[str, Any] = {
        "source_url": url,
        "tags": clean_tags(body.get("tags")),
        "user_metadata": clean_metadata(body.get("user_metadata")),
        "hash": hash_param(expected) if expected else None,
        "name": clean_name(body["name"]) if body.get("name") else None,
    }
    if body.get("preview_id"):
        payload["preview_id"] = parse_uuid(body["preview_id"], "preview_id")
        if await lib.store.get(payload["preview_id"], owner) is None:
            raise fail(404, "NOT_FOUND", "preview asset not found")
    if payload["hash"] and await lib.store.owner_knows_hash(owner, payload["hash"]):
        # Content already in the library: answer at once with a new reference.
        name = payload["name"] or _filename_from(url, None) or "download"
        new_id = await lib.create_reference(owner=owner, content_hash=payload["hash"], name=clean_name(name),
                                            mime_type=None, tags=payload["tags"],
                                            user_metadata=payload["user_metadata"], source=url)
        record = await lib.store.get(new_id, owner)
        return json_response({**lib.to_json(record, base_url(request)), "created_new": False}, 200)
    task = await lib.store.create_task(owner, "asset_download", payload, body.get("idempotency_key"))
    lib.spawn(run_download(lib, task, owner))
    return json_response({"task_id": task["id"], "status": "created",
                          "message": "Download task created. Use task_id to track progress."}, 202)


async def create_from_url(lib: AssetLibrary, request: Request, body: dict[str, Any]) -> Response:
    """``POST /api/assets`` with the cloud's JSON body ``{url, name, ...}``: a download task."""
    if "name" not in body:
        raise fail(400, "INVALID_BODY", "name is required")
    return await start_download(lib, request, body, "url")


# --- exports -----------------------------------------------------------------


def _entry_names(records: list[dict[str, Any]], strategy: str) -> list[tuple[dict[str, Any], str]]:
    seen: set[str] = set()
    out = []
    for r in records:
        stem, ext = os.path.splitext(r["name"])
        if strategy == "asset_id":
            entry = r["id"] + ext
        elif strategy == "group_by_job_id":
            entry = f"{r.get('job_id') or 'no-job'}/{r['name']}"
        elif strategy == "group_by_job_time":
            stamp = dt.datetime.fromtimestamp(r["created_at"], dt.UTC).strftime("%Y-%m-%dT%H-%M-%S")
            entry = f"{stamp}/{r['name']}"
        else:
            entry = r["name"]
        if entry in seen:
            if strategy == "preserve":
                continue
            n = 1
            base, ext2 = os.path.splitext(entry)
            while f"{base} ({n}){ext2}" in seen:
                n += 1
            entry = f"{base} ({n}){ext2}"
        seen.add(entry)
        out.append((r, entry))
    return out


async def run_export(lib: AssetLibrary, task: dict[str, Any], owner: str, records: list[dict[str, Any]]) -> None:
    payload = task["payload"]
    export_name = payload["export_name"]
    final = os.path.join(lib.exports_dir, export_name)
    entries = _entry_names(records, payload["naming_strategy"])
    loop = asyncio.get_running_loop()
    sources = [(await lib.file_for(r), r, entry) for r, entry in entries]
    state = {"task_id": task["id"], "export_name": export_name, "assets_total": len(entries),
             "assets_attempted": 0, "assets_failed": 0, "bytes_total": sum(r["size"] for r, _ in entries),
             "bytes_processed": 0, "progress": 0.0, "status": "running"}

    def report() -> None:
        state["progress"] = (state["bytes_processed"] / state["bytes_total"]) if state["bytes_total"] else 1.0
        loop.call_soon_threadsafe(send_to_owner, lib, owner, "asset_export", dict(state))

    def build() -> None:
        tmp = final + ".part"
        last = 0.0
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path, _record, entry in sources:
                state["assets_attempted"] += 1
                if path is None:
                    state["assets_failed"] += 1
                    continue
                try:
                    with open(path, "rb") as src, zf.open(entry, "w", force_zip64=True) as dst:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
                            state["bytes_processed"] += len(chunk)
                            if time.monotonic() - last >= PROGRESS_EVERY:
                                last = time.monotonic()
                                report()
                except OSError:
                    state["assets_failed"] += 1
        os.replace(tmp, final)

    await lib.store.update_task(task["id"], status="running", started_at=time.time())
    send_to_owner(lib, owner, "asset_export", dict(state))
    try:
        await asyncio.to_thread(build)
    except Exception as exc:
        await lib.store.update_task(task["id"], status="failed", error_message=str(exc), completed_at=time.time())
        send_to_owner(lib, owner, "asset_export", {**state, "status": "failed", "error": str(exc)})
        return
    result = {"export_name": export_name, "url": f"/api/assets/exports/{export_name}?download=true",
              "assets_total": state["assets_total"], "assets_failed": state["assets_failed"],
              "size": os.path.getsize(final)}
    await lib.store.update_task(task["id"], status="completed", result=result, completed_at=time.time())
    send_to_owner(lib, owner, "asset_export", {**state, "status": "completed", "progress": 1.0})


# --- routes ------------------------------------------------------------------


def register(routes: RouteTable, lib: AssetLibrary) -> None:
    store = lib.store

    @routes.post("/assets/download")
    async def download(request: Request) -> Response:
        return await start_download(lib, request, await body_object(request), "source_url")

    @routes.post("/assets/export")
    async def export(request: Request) -> Response:
        body = await body_object(request)
        owner = owner_of(request)
        asset_ids = body.get("asset_ids") or []
        job_ids = body.get("job_ids") or []
        filters = body.get("job_asset_name_filters") or {}
        strategy = body.get("naming_strategy") or "group_by_job_time"
        for value, field in ((asset_ids, "asset_ids"), (job_ids, "job_ids")):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 10000:
                raise fail(400, "INVALID_BODY", f"{field} must be a list of strings")
        if not isinstance(filters, dict) or not all(isinstance(v, list) for v in filters.values()):
            raise fail(400, "INVALID_BODY", "job_asset_name_filters must map job ids to lists of names")
        if strategy not in STRATEGIES:
            raise fail(400, "INVALID_BODY", f"naming_strategy must be one of {', '.join(STRATEGIES)}")
        if not asset_ids and not job_ids:
            raise fail(400, "INVALID_BODY", "send asset_ids and/or job_ids")
        records: dict[str, dict[str, Any]] = {}
        if asset_ids:
            rows, _, _ = await store.list(AssetFilter(owner=owner, ids=list(dict.fromkeys(asset_ids))),
                                          sort="created_at", order="asc", limit=len(asset_ids))
            records.update({r["id"]: r for r in rows})
            missing = set(asset_ids) - set(records)
            if missing:
                raise fail(404, "NOT_FOUND", f"{len(missing)} asset(s) not found")
        if job_ids:
            rows, _, _ = await store.list(AssetFilter(owner=owner, include_public=False, job_ids=job_ids),
                                          sort="created_at", order="asc", limit=100000)
            for r in rows:
                names = filters.get(r["job_id"])
                if names is None or r["name"] in names:
                    records.setdefault(r["id"], r)
        if not records:
            raise fail(400, "NOTHING_TO_EXPORT", "no assets match the request")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        task = await store.create_task(owner, "asset_export", {
            "asset_ids": list(records), "naming_strategy": strategy, "export_name": ""})
        export_name = f"assets-{task['id'][:8]}-{stamp}.zip"
        task["payload"]["export_name"] = export_name
        await store.set_task_payload(task["id"], export_name=export_name)
        lib.spawn(run_export(lib, task, owner, list(records.values())))
        return json_response({"task_id": task["id"], "status": "created", "export_name": export_name,
                              "message": "Export task created. Use task_id to track progress."}, 202)

    @routes.get("/assets/exports/{name}")
    async def export_file(request: Request) -> Response:
        name = request.path_params["name"]
        if not EXPORT_NAME_RE.match(name):
            raise fail(400, "INVALID_NAME", "not an export name")
        done = await store.export_done(owner_of(request), name)
        path = os.path.join(lib.exports_dir, name)
        if not done or not os.path.isfile(path):
            raise fail(404, "NOT_FOUND", "no finished export with that name")
        want_file = request.query_params.get("download", "").lower() in ("1", "true", "yes")
        if want_file:
            return FileResponse(path, media_type="application/zip", filename=name)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
        return json_response({"url": f"/api/assets/exports/{name}?download=true",
                              "expires_at": expires.isoformat().replace("+00:00", "Z")})

    @routes.get("/assets/remote-metadata")
    async def remote_metadata(request: Request) -> Response:
        url = check_url(request.query_params.get("url"), "url")
        try:
            headers, status = await asyncio.to_thread(_probe, url)
        except Exception as exc:
            raise fail(422, "UNREACHABLE", _describe(exc)) from None
        name = _filename_from(url, headers) or ""
        try:
            name = clean_name(name) if name else ""
        except Exception:
            name = ""
        length = int(headers.get("Content-Length") or 0)
        content_range = headers.get("Content-Range") or ""
        if status == 206 and "/" in content_range:
            tail = content_range.rsplit("/", 1)[1]
            length = int(tail) if tail.isdigit() else length
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip() or guess_mime(name)
        ext = os.path.splitext(name)[1].lower()
        warnings = [] if length else [{"code": "UNKNOWN_SIZE", "message": "the server did not say the size"}]
        return json_response({"content_length": length, "content_type": ctype, "filename": name, "name": name,
                              "tags": ["models"] if ext in MODEL_EXTENSIONS else [],
                              "validation": {"is_valid": True, "errors": [], "warnings": warnings}})

    @routes.post("/assets/from-workflow")
    async def from_workflow(request: Request) -> Response:
        body = await body_object(request)
        workflow = body.get("workflow_api_json")
        if not isinstance(workflow, dict):
            raise fail(400, "INVALID_BODY", "workflow_api_json must be an API-format workflow object")
        return json_response(await workflow_assets(lib, owner_of(request), workflow))

    @routes.get("/tasks")
    async def list_tasks(request: Request) -> Response:
        q = request.query_params
        limit = parse_int(q.get("limit"), "limit", 20, 1, 500)
        offset = parse_int(q.get("offset"), "offset", 0, 0, 2**31)
        order = (q.get("sort_order") or "desc").lower()
        if order not in ("asc", "desc"):
            raise fail(400, "INVALID_QUERY", "sort_order must be asc or desc")
        status = q.get("status") or None
        if status and status not in ("created", "running", "completed", "failed"):
            raise fail(400, "INVALID_QUERY", "status must be created, running, completed or failed")
        rows, total = await store.list_tasks(
            owner_of(request), task_name=q.get("task_name") or None, idempotency_key=q.get("idempotency_key") or None,
            status=status, created_after=_time_param(q.get("created_after"), "created_after"),
            created_before=_time_param(q.get("created_before"), "created_before"),
            newest_first=order == "desc", limit=limit, offset=offset)
        return json_response({"tasks": [task_json(t) for t in rows],
                              "pagination": {"offset": offset, "limit": limit, "total": total,
                                             "has_more": offset + len(rows) < total}})

    @routes.get("/tasks/{task_id}")
    async def get_task(request: Request) -> Response:
        task = await store.get_task(request.path_params["task_id"], owner_of(request))
        if task is None:
            raise fail(404, "NOT_FOUND", "task not found")
        return json_response(task_json(task))


def _time_param(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(400, "INVALID_QUERY", f"{name} must be an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _probe(url: str) -> tuple[Any, int]:
    """Headers of ``url``: HEAD first, a one-byte ranged GET when HEAD is refused."""
    for method, extra in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **extra})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.headers, resp.status
        except urllib.error.HTTPError as exc:
            if method == "GET" or exc.code not in (403, 405, 501):
                raise
    raise OSError("unreachable")


async def workflow_assets(lib: AssetLibrary, owner: str, workflow: dict[str, Any]) -> dict[str, Any]:
    """The library assets and model files a workflow's inputs name, and those that are missing."""
    folders = lib.kernel.folders
    assets: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    seen: set[str] = set()
    for node_id, node in list(workflow.items())[:5000]:
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for input_name, value in inputs.items():
            if not isinstance(value, str) or not FILE_LIKE.match(value) or value in seen:
                continue
            seen.add(value)
            base = value.replace("\\", "/").rsplit("/", 1)[-1]
            found = await lib.store.by_name(owner, base)
            is_model = value.lower().endswith(MODEL_EXTENSIONS)
            if found is not None:
                r = found
                assets.append({"id": r["id"], "name": r["name"], "preview_url": f"/api/assets/{r['id']}/content",
                               "storage_url": f"/api/assets/{r['id']}/content", "model": is_model,
                               "public": r["owner"] == "", "in_library": r["owner"] == owner,
                               "asset_hash": r["hash"], "node_id": str(node_id), "input": input_name})
                continue
            on_disk = None
            if is_model:
                for folder in folders.names():
                    try:
                        on_disk = folders.full_path(folder, value)
                    except Exception:
                        on_disk = None
                    if on_disk:
                        break
            entry = {"name": value, "node_id": str(node_id), "input": input_name, "model": is_model,
                     "on_disk": bool(on_disk)}
            if not on_disk:
                missing.append(entry)
    return {"assets": assets, "missing": missing}

