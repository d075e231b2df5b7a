"""Run-and-wait, a job's result, its server-sent events and its previews.

* ``POST /api/prompt?wait=SECONDS`` (or the header ``Prefer: wait=SECONDS``)
  queues as usual, then answers when the job ends with its result (below),
  or ``202`` with the job's URLs when the wait runs out. The job belongs to
  the queue, not to the request: a client that disconnects cancels nothing.
* ``GET /api/jobs/{id}/result?wait=SECONDS``: the same answer for a job
  already queued, so a client can keep waiting after a ``202``.
* ``GET /api/jobs/{id}/events``: the job's messages as server-sent events,
  each ``data`` the WebSocket message ``{"type", "data"}``, numbered by
  ``id``; a reconnecting client sends ``Last-Event-ID`` (or
  ``?last_event_id=``) and gets only what it missed. Binary preview frames
  become ``preview`` messages with a URL; the stream ends after the final
  ``executing`` message with ``node: null``.
* ``GET /api/jobs/{id}/previews/{n}``: a preview image, while the job's log
  is kept.

A result: ``prompt_id``, ``status`` (``completed``, ``failed`` or
``cancelled``), ``outputs`` (the history outputs, every file with an
absolute ``url`` on ``/api/view``), ``execution_error`` for a failed job,
``timings`` (Unix seconds and durations) and the job's ``url``.

Every route is scoped to the caller's identity: another owner's job is 404.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..http import HTTPError, dumps, json_response
from ..routing import RouteTable
from .jobs import FINAL_EVENT, JobLog
from .queue import job_status

MAX_WAIT_S = 3600.0
HEARTBEAT_S = 15.0
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*([0-9.]+)", re.IGNORECASE)


def owner_of(request: Request) -> str:
    identity = getattr(request.state, "identity", None)
    return identity.key if identity is not None else "default"


def wait_seconds(request: Request, name: str = "wait") -> float | None:
    """The requested wait: ``?wait=`` or ``Prefer: wait=``; None when not asked; 400 when malformed."""
    scope = request.scope
    if not scope.get("query_string") and not any(k == b"prefer" for k, _ in scope.get("headers", ())):
        return None  # the usual POST /prompt: no query or header objects built
    raw = request.query_params.get(name)
    if raw is None:
        match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
        if match is None:
            return None
        raw = match.group(1)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HTTPError(400, f"{name} must be a number of seconds between 0 and {MAX_WAIT_S:g}",
                        type="invalid_parameter")
    return min(value, MAX_WAIT_S)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def view_url(base: str, item: dict[str, Any]) -> str:
    query = {"filename": item.get("filename", ""), "subfolder": item.get("subfolder") or "",
             "type": item.get("type") or "output"}
    return f"{base}/api/view?{urlencode(query)}"


def with_urls(outputs: dict[str, Any], base: str) -> dict[str, Any]:
    """History outputs with an absolute ``url`` on every file item."""
    out: dict[str, Any] = {}
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, dict):
            out[node_id] = node_out
            continue
        fixed: dict[str, Any] = {}
        for key, items in node_out.items():
            if isinstance(items, list):
                fixed[key] = [{**item, "url": view_url(base, item)}
                              if isinstance(item, dict) and isinstance(item.get("filename"), str) else item
                              for item in items]
            else:
                fixed[key] = items
        out[node_id] = fixed
    return out


def job_urls(base: str, prompt_id: str) -> dict[str, str]:
    return {"url": f"{base}/api/jobs/{prompt_id}", "result_url": f"{base}/api/jobs/{prompt_id}/result",
            "events_url": f"{base}/api/jobs/{prompt_id}/events"}


def _timings(created: float | None, started: float | None, ended: float | None) -> dict[str, Any]:
    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 6) if a is not None and b is not None else None

    return {"queued_at": created, "started_at": started, "finished_at": ended,
            "queue_seconds": span(created, started), "execution_seconds": span(started, ended),
            "total_seconds": span(created, ended)}


def result_from_history(prompt_id: str, entry: dict[str, Any], created: float | None, started: float | None,
                        ended: float | None, base: str) -> dict[str, Any]:
    """The result document of a finished job (see the module docstring)."""
    status = entry.get("status") or {}
    result: dict[str, Any] = {"prompt_id": prompt_id, "status": job_status(entry),
                              "outputs": with_urls(entry.get("outputs") or {}, base),
                              "timings": _timings(created, started, ended), **job_urls(base, prompt_id)}
    for event, data in status.get("messages") or []:
        if event == "execution_error":
            result["execution_error"] = data
    return result


class JobLookup:
    """Where one of the caller's jobs is: queued or running, finished (history), or dropped from the queue."""

    def __init__(self, state: str, history: tuple | None = None, log: JobLog | None = None):
        self.state = state  # "pending", "in_progress", "finished", "removed"
        self.history = history
        self.log = log


async def find_job(executor: Any, owner: str, prompt_id: str) -> JobLookup | None:
    running = executor.running.get(prompt_id) or getattr(executor, "starting", {}).get(prompt_id)
    if running is not None and running.owner == owner:  # starting: taken, its row being marked running
        return JobLookup("in_progress")
    for queued in executor.heap:
        if queued.prompt_id == prompt_id and queued.owner == owner:
            return JobLookup("pending")
    record = await executor.store.history_record(owner, prompt_id)
    if record is not None:
        return JobLookup("finished", history=record)
    log = executor.jobs.get(prompt_id)
    if log is not None and log.done and log.owner == owner:
        return JobLookup("removed", log=log)
    return None


async def result_or_progress(executor: Any, owner: str, prompt_id: str, base: str) -> tuple[int, dict[str, Any]]:
    """``(200, result)`` for an ended job, ``(202, where it is)`` for a live one; 404 when unknown."""
    found = await find_job(executor, owner, prompt_id)
    if found is None:
        raise HTTPError(404, f"Job {prompt_id} not found", type="not_found")
    if found.state == "finished":
        blob, created, started, ended = found.history
        return 200, result_from_history(prompt_id, orjson.loads(blob), created, started, ended, base)
    if found.state == "removed":
        return 200, {"prompt_id": prompt_id, "status": found.log.status or "cancelled", "outputs": {},
                     "timings": _timings(None, None, found.log.finished_at), **job_urls(base, prompt_id)}
    return 202, {"prompt_id": prompt_id, "status": found.state, **job_urls(base, prompt_id)}


async def wait_for_result(request: Request, executor: Any, owner: str, prompt_id: str, seconds: float,
                          extra: dict[str, Any] | None = None) -> Response:
    """Answer with the job's result once it ends, or 202 after ``seconds``; stop early if the client leaves."""
    found = await find_job(executor, owner, prompt_id)
    if found is not None and found.state in ("pending", "in_progress") and seconds > 0:
        log = executor.jobs.open(prompt_id, owner)
        if not await _wait_unless_gone(request, executor, log, seconds):
            return Response(b"", status_code=499)  # nobody is listening; the job goes on
    status, body = await result_or_progress(executor, owner, prompt_id, base_url(request))
    if extra:
        body = {**extra, **body}
    headers = {"Location": body["url"]} if status == 202 else None
    return json_response(body, status, headers)


async def _wait_unless_gone(request: Request, executor: Any, log: JobLog, seconds: float) -> bool:
    """Wait for the job; False if the client disconnected first (the job is not touched)."""
    import asyncio

    finished = asyncio.ensure_future(executor.jobs.wait(log, seconds))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (finished, gone):
            if not task.done():
                task.cancel()
    return not (gone.done() and not gone.cancelled() and not finished.done())


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (its request body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    try:
        return max(int(raw.strip()), 0)
    except ValueError:
        raise HTTPError(400, "Last-Event-ID must be a message id (an integer)", type="invalid_parameter") from None


def _frame(seq: int, event: str, data: Any, base: str) -> bytes:
    if event == "preview" and isinstance(data, dict) and str(data.get("url", "")).startswith("/"):
        data = {**data, "url": base + data["url"]}
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event.encode(), dumps({"type": event, "data": data}))


def history_messages(prompt_id: str, entry: dict[str, Any]) -> list[tuple[str, Any]]:
    """The messages of a job whose live log is gone, rebuilt from its history entry."""
    status = entry.get("status") or {}
    messages = [(e, d) for e, d in status.get("messages") or [] if e in ("execution_start", "execution_cached")]
    for node_id, output in (entry.get("outputs") or {}).items():
        messages.append(("executed", {"node": node_id, "display_node": node_id, "output": output,
                                      "prompt_id": prompt_id}))
    messages += [(e, d) for e, d in status.get("messages") or []
                 if e in ("execution_success", "execution_error", "execution_interrupted")]
    messages.append((FINAL_EVENT, {"node": None, "prompt_id": prompt_id}))
    return messages


def register(table: RouteTable, kernel: Any) -> None:
    def executor() -> Any:
        ex = kernel.executor
        if ex is None or not ex.started:
            raise HTTPError(503, "The executor is not running", type="executor_unavailable")
        return ex

    for spec in table.specs:  # /prompt is registered beside queue and history; its wait is described here
        if spec.path == "/prompt" and "POST" in spec.methods and spec.openapi is None:
            spec.openapi = PROMPT_WAIT_DOC

    @table.get("/jobs/{job_id}/result", api_only=True, openapi=RESULT_DOC)
    async def job_result(request: Request) -> Response:
        """A job's outputs (with absolute URLs), status and timings; waits up to ``?wait=`` seconds."""
        ex = executor()
        seconds = wait_seconds(request) or 0.0
        return await wait_for_result(request, ex, owner_of(request), request.path_params["job_id"], seconds)

    @table.get("/jobs/{job_id}/events", api_only=True, openapi=EVENTS_DOC)
    async def job_events(request: Request) -> Response:
        """A job's WebSocket messages as server-sent events, resumable with ``Last-Event-ID``."""
        ex = executor()
        prompt_id = request.path_params["job_id"]
        owner = owner_of(request)
        after = _last_event_id(request)
        found = await find_job(ex, owner, prompt_id)
        if found is None:
            raise HTTPError(404, f"Job {prompt_id} not found", type="not_found")
        base = base_url(request)
        log = ex.jobs.get(prompt_id)
        if found.state in ("pending", "in_progress") or (log is not None and log.done):
            log = ex.jobs.open(prompt_id, owner)
            if log.done and after >= log.last_seq:
                return Response(b"", status_code=204)  # all seen; 204 stops an EventSource reconnecting
            body: AsyncIterator[bytes] = _live(ex, log, after, base)
        else:
            body = _replayed(prompt_id, orjson.loads(found.history[0]), after, base)
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @table.get("/jobs/{job_id}/previews/{number}", api_only=True, openapi=PREVIEW_DOC)
    async def job_preview(request: Request) -> Response:
        """One preview image of a job, as announced by its ``preview`` message."""
        ex = executor()
        prompt_id = request.path_params["job_id"]
        if await find_job(ex, owner_of(request), prompt_id) is None:
            raise HTTPError(404, f"Job {prompt_id} not found", type="not_found")
        log = ex.jobs.get(prompt_id)
        try:
            number = int(request.path_params["number"])
        except ValueError:
            raise HTTPError(400, "a preview number is an integer", type="invalid_parameter") from None
        found = log.previews.get(number) if log is not None else None
        if found is None:
            raise HTTPError(404, f"Preview {number} of job {prompt_id} is not kept", type="not_found")
        mime, image = found
        return Response(image, media_type=mime, headers={"Cache-Control": "private, max-age=600"})


async def _live(ex: Any, log: JobLog, after: int, base: str) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    async for item in ex.jobs.follow(log, after, HEARTBEAT_S):
        if item is None:
            yield b": keep-alive\n\n"
            continue
        seq, event, data = item
        yield _frame(seq, event, data, base)


async def _replayed(prompt_id: str, entry: dict[str, Any], after: int, base: str) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    messages = history_messages(prompt_id, entry)
    if after >= len(messages):
        # The client saw more of the live stream than history keeps: send how it ended.
        for n, (event, data) in enumerate(messages[-2:], start=after + 1):
            yield _frame(n, event, data, base)
        return
    for n, (event, data) in enumerate(messages, start=1):
        if n > after:
            yield _frame(n, event, data, base)


# -- what /openapi.json says about these routes -------------------------------------------------------------

_URL = {"type": "string", "format": "uri"}
_TIME = {"type": ["number", "null"]}
JOB_SCHEMAS: dict[str, Any] = {
    "JobOutputs": {
        "type": "object", "description": "History outputs by node id; every file item has an absolute `url`.",
        "additionalProperties": {"type": "object", "additionalProperties": True}},
    "JobTimings": {
        "type": "object", "description": "Unix times in seconds, and durations in seconds.",
        "properties": {"queued_at": _TIME, "started_at": _TIME, "finished_at": _TIME, "queue_seconds": _TIME,
                       "execution_seconds": _TIME, "total_seconds": _TIME}},
    "JobResult": {
        "type": "object", "required": ["prompt_id", "status", "outputs", "url"],
        "properties": {"prompt_id": {"type": "string"},
                       "status": {"type": "string", "enum": ["completed", "failed", "cancelled"]},
                       "outputs": {"$ref": "#/components/schemas/JobOutputs"},
                       "execution_error": {"type": "object", "additionalProperties": True},
                       "timings": {"$ref": "#/components/schemas/JobTimings"},
                       "url": _URL, "result_url": _URL, "events_url": _URL,
                       "number": {"type": "number"}, "node_errors": {"type": "object"}}},
    "JobInProgress": {
        "type": "object", "required": ["prompt_id", "status", "url"],
        "properties": {"prompt_id": {"type": "string"},
                       "status": {"type": "string", "enum": ["pending", "in_progress"]},
                       "url": _URL, "result_url": _URL, "events_url": _URL,
                       "number": {"type": "number"}, "node_errors": {"type": "object"}}},
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_WAIT = {"name": "wait", "in": "query", "required": False,
         "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
         "description": "Seconds to wait for the job to end (the header `Prefer: wait=SECONDS` does the same)."}
_NOT_FOUND = _json("ErrorEnvelope", "No such job for the caller")
RESULT_DOC = {"parameters": [_WAIT], "components": {"schemas": JOB_SCHEMAS}, "responses": {
    "200": _json("JobResult", "The job ended"),
    "202": {**_json("JobInProgress", "Still queued or running when the wait ran out"),
            "headers": {"Location": {"schema": {"type": "string"}}}},
    "400": _json("ErrorEnvelope", "A malformed wait"), "404": _NOT_FOUND}}
EVENTS_DOC = {
    "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                   {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "integer"}}],
    "responses": {
        "200": {"description": "`text/event-stream`: `id` numbers the messages, `event` is the message type and "
                               "`data` the WebSocket message `{\"type\", \"data\"}` (see `x-sse-messages`); "
                               "`preview` messages carry the URL of a preview image.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "204": {"description": "The job has ended and the client has seen every message"},
        "400": _json("ErrorEnvelope", "A malformed Last-Event-ID"), "404": _NOT_FOUND},
    "x-sse-messages": ["execution_start", "execution_cached", "executing", "progress", "progress_state",
                       "progress_text", "executed", "preview", "execution_success", "execution_error",
                       "execution_interrupted"]}
PREVIEW_DOC = {"responses": {
    "200": {"description": "The image", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                                                    "image/png": {"schema": {"type": "string", "format": "binary"}}}},
    "404": _json("ErrorEnvelope", "No such job, or the preview is no longer kept")}}
PROMPT_WAIT_DOC = {"parameters": [_WAIT], "components": {"schemas": JOB_SCHEMAS}, "responses": {
    "200": {"description": "Queued (without `wait`), or the job's result (with `wait`, when it ended in time)",
            "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/PromptResponse"}, {"$ref": "#/components/schemas/JobResult"}]}}}},
    "202": {**_json("JobInProgress", "With `wait`: queued, but not finished when the wait ran out"),
            "headers": {"Location": {"schema": {"type": "string"}}}}}}
