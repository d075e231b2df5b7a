"""HTTP routes of the executor: /prompt, /queue, /interrupt, /free, /history, /jobs, /api/history_v2.

Everything user-scoped is keyed by ``request.state.identity.key``: a caller
sees and changes only its own queue items and history. ``extra_data`` keys
carrying credentials are stripped from every response.

``GET /history/{id}`` answers ``{}`` for an unknown id *and* for a prompt
that has not finished (ComfyUI clients poll it and treat presence as
"done"); the header ``X-Prompt-Status`` tells them apart: ``unknown``,
``pending``, ``running`` or ``finished``. ``/api/jobs/{id}`` answers 404
only for unknown ids.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..files.access import opening_files_for
from ..http import JSON_TYPE, HTTPError, empty, json_response, parse_json_body
from ..routing import RouteTable
from .job_routes import base_url, wait_for_result, wait_seconds
from .nodeclass import NodeDefs
from .store import strip_sensitive
from .validation import validate_prompt

log = logging.getLogger(__name__)


def _owner(request: Request) -> str:
    identity = getattr(request.state, "identity", None)
    return identity.key if identity is not None else "default"


async def _body(request: Request, default: Any = None) -> Any:
    try:
        return await parse_json_body(request, empty=default)
    except orjson.JSONDecodeError:
        return default


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return max(min(int(value), 2**62), -(2**62))
    except ValueError:  # ComfyUI answers 500; the seed documents only 200, so fall back to the default
        return default


def register(table: RouteTable, kernel: Any) -> None:
    def executor() -> Any:
        ex = kernel.executor
        if ex is None or not ex.started:
            raise HTTPError(503, "The executor is not running", type="executor_unavailable")
        return ex

    @table.get("/prompt")
    async def get_prompt(request: Request) -> Response:
        identity = getattr(request.state, "identity", None)
        return json_response({"exec_info": {"queue_remaining": kernel.queue_remaining(identity)}})

    @table.post("/prompt")
    async def post_prompt(request: Request) -> Response:
        ex = executor()
        wait = wait_seconds(request)
        try:
            body = await parse_json_body(request, empty={})
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"Request body is not valid JSON: {exc}", type="invalid_json",
                            body={"error": {"type": "invalid_json", "message": "Invalid JSON body",
                                            "details": str(exc), "extra_info": {}}, "node_errors": {}}) from None
        if not isinstance(body, dict):
            body = {}
        host = kernel.host
        if host.implemented("ck_on_prompt"):
            for result in host.call_each("ck_on_prompt", body=body, request=request):
                if isinstance(result, dict):
                    body = result
        if "number" in body:
            try:
                number: Any = float(body["number"])
            except (TypeError, ValueError):
                raise HTTPError(400, "number must be a number", type="invalid_parameter") from None
        else:
            number = ex.next_number(bool(body.get("front")))
        if "prompt" not in body:
            return json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                            "details": "No prompt provided", "extra_info": {}},
                                  "node_errors": {}}, 400)
        prompt = body["prompt"]
        prompt_id = body.get("prompt_id")
        prompt_id = str(uuid.uuid4()) if prompt_id is None else str(prompt_id)
        targets = body.get("partial_execution_targets")
        if targets is not None and not isinstance(targets, list):
            targets = None
        owner = _owner(request)
        defs = NodeDefs(kernel.nodes)  # what validation reads of each class; the run reuses it
        with opening_files_for(owner):  # VALIDATE_INPUTS opens files as the prompt's owner
            valid, error, outputs, node_errors = await validate_prompt(prompt, kernel.nodes, targets, defs)
        if not valid:
            return json_response({"error": error, "node_errors": node_errors}, 400)
        extra_data = body.get("extra_data")
        extra_data = dict(extra_data) if isinstance(extra_data, dict) else {}
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        admit = host.impls("ck_admit_prompt")
        if admit:
            await _admit(kernel, admit, request, prompt_id, prompt, extra_data, outputs, owner)
        hooks = kernel.webhooks if getattr(kernel, "webhooks", None) is not None and kernel.webhooks.started else None
        if hooks is not None and ("webhook" in extra_data or hooks.wants(owner)):
            hook = hooks.parse_prompt_webhook(extra_data["webhook"]) if "webhook" in extra_data else None
            await hooks.track(prompt_id, owner, hook, base_url(request))
        item = [number, prompt_id, prompt, extra_data, outputs]
        await ex.put(item, owner, defs)
        if hooks is not None:
            hooks.queued(prompt_id, number)
        if host.implemented("ck_prompt_queued"):
            host.call_each("ck_prompt_queued", event={
                "prompt_id": prompt_id, "number": number, "owner": owner,
                "client_id": extra_data.get("client_id"), "outputs": outputs})
        if wait is not None:
            return await wait_for_result(request, ex, owner, prompt_id, wait,
                                         extra={"number": number, "node_errors": node_errors})
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    @table.get("/queue")
    async def get_queue(request: Request) -> Response:
        ex = executor()
        running, pending = ex.queue_for(_owner(request))
        return json_response({"queue_running": running, "queue_pending": pending})

    @table.post("/queue")
    async def post_queue(request: Request) -> Response:
        ex = executor()
        body = await _body(request, {})
        if not isinstance(body, dict):
            body = {}
        owner = _owner(request)
        if body.get("clear"):
            await ex.delete(None, owner)
        if isinstance(body.get("delete"), list):
            await ex.delete([str(x) for x in body["delete"]], owner)
        return empty()

    @table.post("/interrupt")
    async def interrupt(request: Request) -> Response:
        ex = executor()
        body = await _body(request, {})
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id is not None:
            if ex.status(str(prompt_id)) == "running":
                ex.interrupt(str(prompt_id))
        else:
            ex.interrupt(None)
        return empty()

    @table.post("/free")
    async def free(request: Request) -> Response:
        ex = executor()
        body = await _body(request, {})
        if isinstance(body, dict):
            await ex.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
        return empty()

    @table.get("/history")
    async def get_history(request: Request) -> Response:
        ex = executor()
        max_items = _int_param(request, "max_items", None)
        offset = _int_param(request, "offset", -1)
        rows = await ex.store.history(_owner(request), max_items, offset if offset is not None else -1)
        return _history_body(rows)

    @table.post("/history")
    async def post_history(request: Request) -> Response:
        ex = executor()
        body = await _body(request, {})
        if not isinstance(body, dict):
            body = {}
        owner = _owner(request)
        if body.get("clear"):
            await ex.store.delete_history(owner, None)
        if isinstance(body.get("delete"), list):
            await ex.store.delete_history(owner, [str(x) for x in body["delete"]])
        return empty()

    @table.get("/history/{prompt_id}")
    async def get_history_one(request: Request) -> Response:
        ex = executor()
        prompt_id = request.path_params["prompt_id"]
        owner = _owner(request)
        blob = await ex.store.history_entry(owner, prompt_id)
        if blob is None:
            status = ex.status(prompt_id) or "unknown"
            return Response(b"{}", media_type=JSON_TYPE, headers={"X-Prompt-Status": status})
        return Response(_history_bytes([(prompt_id, blob)]), media_type=JSON_TYPE,
                        headers={"X-Prompt-Status": "finished"})

    # -- jobs ------------------------------------------------------------------------------

    async def all_jobs(owner: str) -> list[dict[str, Any]]:
        ex = executor()
        jobs: list[dict[str, Any]] = []
        for queued in list(ex.running.values()):
            if queued.owner == owner:
                jobs.append({"id": queued.prompt_id, "status": "in_progress", "create_time": _ms(queued.created),
                             "_number": queued.number, "_created": queued.created})
        for queued in sorted(ex.heap):
            if queued.owner == owner:
                jobs.append({"id": queued.prompt_id, "status": "pending", "create_time": _ms(queued.created),
                             "_number": queued.number, "_created": queued.created})
        for pid, _status, blob, created, started, ended, count in await ex.store.history_rows(owner):
            entry = orjson.loads(blob)
            job = {"id": pid, "status": _job_status(entry), "create_time": _ms(created), "_created": created,
                   "execution_start_time": _ms(started), "execution_end_time": _ms(ended), "outputs_count": count}
            preview = _preview(entry.get("outputs") or {})
            if preview is not None:
                job["preview_output"] = preview
            jobs.append(job)
        return jobs

    @table.get("/jobs")
    async def list_jobs(request: Request) -> Response:
        owner = _owner(request)
        jobs = await all_jobs(owner)
        status = request.query_params.get("status")
        if status:
            wanted = {s.strip() for s in status.split(",") if s.strip()}
            jobs = [j for j in jobs if j["status"] in wanted]
        sort_by = request.query_params.get("sort_by", "create_time")
        reverse = request.query_params.get("sort_order", "desc") != "asc"
        if sort_by == "execution_time":
            def key(j: dict[str, Any]) -> float:
                s, e = j.get("execution_start_time"), j.get("execution_end_time")
                return (e - s) if s is not None and e is not None else -1.0
        else:
            def key(j: dict[str, Any]) -> float:
                return j.get("_created") or 0.0  # seconds: finer than the milliseconds shown
        jobs.sort(key=key, reverse=reverse)
        offset = max(_int_param(request, "offset", 0) or 0, 0)
        limit = _int_param(request, "limit", None)
        if limit is not None and limit < 1:
            raise HTTPError(400, "limit must be a positive integer", type="invalid_parameter")
        total = len(jobs)
        page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
        for j in page:
            j.pop("_number", None)
            j.pop("_created", None)
        # Without a limit every job is on the page; the page size is still at least 1 (as specified).
        return json_response({"jobs": page, "pagination": {
            "offset": offset, "limit": limit if limit is not None else max(total, 1), "total": total,
            "has_more": offset + len(page) < total}})

    @table.get("/jobs/{job_id}")
    async def get_job(request: Request) -> Response:
        ex = executor()
        job_id = request.path_params["job_id"]
        owner = _owner(request)
        blob = await ex.store.history_entry(owner, job_id)
        if blob is not None:
            entry = orjson.loads(blob)
            rows = [r for r in await ex.store.history_rows(owner) if r[0] == job_id]
            _pid, _status, _blob, created, started, ended, count = rows[0]
            status = entry.get("status") or {}
            detail = {"id": job_id, "status": _job_status(entry),
                      "workflow": {"prompt": entry["prompt"][2],
                                   "extra_data": entry["prompt"][3]},
                      "outputs": entry.get("outputs") or {}, "create_time": _ms(created), "update_time": _ms(ended),
                      "execution_start_time": _ms(started), "execution_end_time": _ms(ended),
                      "outputs_count": count,
                      "execution_status": status, "execution_meta": entry.get("meta") or {}}
            for event, data in status.get("messages") or []:
                if event == "execution_error":
                    detail["execution_error"] = data
            preview = _preview(entry.get("outputs") or {})
            if preview is not None:
                detail["preview_output"] = preview
            return json_response(detail)
        for queued in [*getattr(ex, "starting", {}).values(), *ex.running.values(), *ex.heap]:
            if queued.prompt_id == job_id and queued.owner == owner:
                created_ms = _ms(queued.created)
                taken = queued.prompt_id in ex.running or queued.prompt_id in getattr(ex, "starting", {})
                return json_response({"id": job_id, "status": "in_progress" if taken else "pending",
                                      "create_time": created_ms, "update_time": created_ms,
                                      "workflow": {"prompt": queued.item[2],
                                                   "extra_data": strip_sensitive(queued.item[3])}})
        raise HTTPError(404, f"Job {job_id} not found", type="not_found")

    @table.post("/jobs/{job_id}/cancel", api_only=True)
    async def cancel_job(request: Request) -> Response:
        ex = executor()
        job_id = request.path_params["job_id"]
        owner = _owner(request)
        state = ex.status(job_id)
        owned = any(q.prompt_id == job_id and q.owner == owner
                    for q in [*getattr(ex, "starting", {}).values(), *ex.running.values(), *ex.heap])
        if state == "pending" and owned:
            await ex.delete([job_id], owner)
            return json_response({"cancelled": True})
        if state == "running" and owned:
            ex.interrupt(job_id)
            return json_response({"cancelled": True})
        if await ex.store.history_entry(owner, job_id) is not None:
            return json_response({"cancelled": False})
        raise HTTPError(404, f"Job {job_id} not found", type="not_found")

    @table.get("/history_v2", api_only=True)
    async def history_v2(request: Request) -> Response:
        ex = executor()
        max_items = _int_param(request, "max_items", None)
        offset = max(_int_param(request, "offset", 0) or 0, 0)
        owner = _owner(request)
        rows = await ex.store.history_rows(owner)
        rows.reverse()  # newest first
        rows = rows[offset:] if max_items is None else rows[offset:offset + max(max_items, 0)]
        history = []
        for pid, _status, blob, *_rest in rows:
            entry = orjson.loads(blob)
            prompt = entry.get("prompt") or []
            extra = dict(prompt[3]) if len(prompt) > 3 and isinstance(prompt[3], dict) else {}
            pnginfo = extra.get("extra_pnginfo")
            if isinstance(pnginfo, dict) and "workflow" in pnginfo:
                extra["extra_pnginfo"] = {k: v for k, v in pnginfo.items() if k != "workflow"}
            if prompt:
                entry["prompt"] = [prompt[0], prompt[1], prompt[2], extra, prompt[4]]
            history.append({"prompt_id": pid, **entry})
        return json_response({"history": history})

    @table.get("/history_v2/{prompt_id}", api_only=True)
    async def history_v2_one(request: Request) -> Response:
        ex = executor()
        prompt_id = request.path_params["prompt_id"]
        blob = await ex.store.history_entry(_owner(request), prompt_id)
        if blob is None:
            raise HTTPError(404, f"Prompt {prompt_id} not found", type="not_found")
        return Response(_history_bytes([(prompt_id, blob)]), media_type=JSON_TYPE)


def _ms(seconds: float | None) -> int | None:
    """Epoch seconds (how the queue and store keep times) to the epoch milliseconds jobs carry."""
    return None if seconds is None else int(round(seconds * 1000))


async def _admit(kernel: Any, impls: tuple[Any, ...], request: Request, prompt_id: str, prompt: dict[str, Any],
                 extra_data: dict[str, Any], outputs: list[str], owner: str) -> None:
    """Run every ``ck_admit_prompt``; an HTTPError refuses with its answer, anything else with a 503."""
    args = {"request": request, "kernel": kernel, "prompt_id": prompt_id, "prompt": prompt,
            "extra_data": extra_data, "outputs": outputs, "owner": owner}
    for impl in impls:  # plugin order (PluginHost.impls)
        try:
            value = impl.function(**{name: args[name] for name in impl.argnames if name in args})
            if inspect.isawaitable(value):
                await value
        except HTTPError:
            raise
        except Exception:
            name = impl.plugin
            log.exception("plugin %s failed to decide on prompt %s", name, prompt_id)
            raise HTTPError(503, "The prompt could not be admitted", type="admission_failed", body={
                "error": {"type": "admission_failed", "message": "The prompt could not be admitted",
                          "details": f"The {name} plugin could not check this prompt; see the server log.",
                          "extra_info": {}}, "node_errors": {}}) from None


def _job_status(entry: dict[str, Any]) -> str:
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return "completed"
    for event, _data in status.get("messages") or []:
        if event == "execution_interrupted":
            return "cancelled"
    return "failed"


def _preview(outputs: dict[str, Any]) -> dict[str, Any] | None:
    for node_id, out in outputs.items():
        if not isinstance(out, dict):
            continue
        for key in ("images", "video", "audio", "gifs"):
            items = out.get(key)
            if isinstance(items, list) and items and isinstance(items[0], dict):
                return {**items[0], "nodeId": node_id, "mediaType": key}
    return None


def _history_bytes(rows: list[tuple[str, bytes]]) -> bytes:
    """Splice stored JSON entries into one object without re-parsing them."""
    parts = [orjson.dumps(pid) + b":" + bytes(blob) for pid, blob in rows]
    return b"{" + b",".join(parts) + b"}"


def _history_body(rows: list[tuple[str, bytes]]) -> Response:
    return Response(_history_bytes(rows), media_type=JSON_TYPE)
