"""The last three operations of the cloud contract that no other plugin serves.

Served whenever the plugin is installed, with or without ``--billing``:

* ``GET /api/job/{job_id}/status`` (deprecated in the contract in favour of
  ``/api/jobs/{id}``): the caller's queued, running or finished prompt as
  ``waiting``/``pending``/``in_progress``/``completed``/``error``/``cancelled``.
  Another owner's job answers 404, as an unknown one does, so job ids of
  other users cannot be probed (the contract lists 403 for that case).
* ``GET /api/files/mask-layers?filename=``: the mask editor saves four layers
  of one edit in the input folder, ``clipspace-{mask,paint,painted,
  painted-masked}-<timestamp>.png``; given any of them (optionally with a
  subfolder and a `` [input]`` annotation), this answers the file names of
  the four, ``null`` for a layer that is not there.
* ``GET /api/vhs/queryvideo?filename=&type=&subfolder=``: the metadata
  VideoHelperSuite's loaders show (``source``: size, fps, frames, duration;
  ``loaded``: what remains after ``force_rate``, ``skip_first_frames``,
  ``select_every_nth`` and ``start_time``), read from the file (see
  :mod:`.video`). With the multiuser plugin, output and temp files answer
  only their owners, as ``/view`` does. When the VideoHelperSuite pack itself
  is installed, its own handler answers instead.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from comfy_kernel.files.paths import UnsafePath, safe_join, split_annotation
from comfy_kernel.http import json_response

from .service import fail
from .video import ProbeCache, Unreadable

OWNER = "billing"
MASK_LAYER = re.compile(r"^clipspace-(painted-masked|painted|paint|mask)-(\d{1,20})\.png$")
LAYER_KEYS = {"mask": "mask", "paint": "paint", "painted": "painted", "painted-masked": "painted_masked"}


def register(routes: Any, kernel: Any) -> None:
    probes = ProbeCache()

    @routes.get("/job/{job_id}/status")
    async def job_status(request: Request) -> Response:
        identity = getattr(request.state, "identity", None)
        owner = identity.key if identity is not None else "default"
        job_id = request.path_params["job_id"]
        status = await _job_status(kernel, owner, job_id)
        if status is None:
            raise fail(404, "not_found", "Job not found")
        return json_response(status)

    @routes.get("/files/mask-layers")
    async def mask_layers(request: Request) -> Response:
        raw = request.query_params.get("filename") or ""
        bare, kind = split_annotation(raw.strip())
        if kind not in (None, "input"):
            raise fail(404, "not_found", "Mask layers live in the input folder")
        subfolder, _, name = bare.replace("\\", "/").rpartition("/")
        subfolder = request.query_params.get("subfolder", subfolder) or ""
        match = MASK_LAYER.match(name)
        if match is None:
            raise fail(404, "not_found", "Not a mask layer file (clipspace-<layer>-<timestamp>.png)")
        try:
            folder = safe_join(kernel.dirs.input, subfolder)
            if not os.path.isfile(safe_join(folder, name)):
                raise fail(404, "not_found", "File not found")
        except UnsafePath:
            raise fail(404, "not_found", "File not found") from None
        stamp = match.group(2)
        out: dict[str, str | None] = {}
        for layer, key in LAYER_KEYS.items():
            candidate = f"clipspace-{layer}-{stamp}.png"
            out[key] = candidate if os.path.isfile(os.path.join(folder, candidate)) else None
        return json_response(out)

    @routes.get("/vhs/queryvideo")
    async def query_video(request: Request) -> Response:
        pack = _pack_handler(kernel)
        if pack is not None:
            return await pack(request)
        params = request.query_params
        filename = params.get("filename")
        if not filename:
            return json_response({"message": "missing required query parameter: filename"}, 400)
        bare, annotated = split_annotation(filename)
        kind = annotated or params.get("type") or "output"
        base = kernel.dirs.by_type(kind)
        if base is None:
            raise fail(400, "invalid_request", f"unknown type {kind!r} (input, output or temp)")
        try:
            path = safe_join(base, params.get("subfolder") or "", os.path.basename(bare.replace("\\", "/")))
        except UnsafePath:
            raise fail(400, "invalid_request", "invalid subfolder or file name") from None
        if not os.path.isfile(path) or not _may_read(kernel, request, kind, path):
            raise fail(404, "not_found", "File not found")
        try:
            source = await asyncio.to_thread(probes.get, path)
        except Unreadable as exc:
            raise fail(415, "unsupported_media_type", str(exc)) from None
        try:
            loaded = _loaded(source, params)
        except ValueError:
            raise fail(400, "invalid_request", "force_rate, skip_first_frames, select_every_nth and start_time "
                                               "must be numbers") from None
        return json_response({"source": source, "loaded": loaded})


def _loaded(source: dict[str, Any], params: Any) -> dict[str, Any]:
    """What a VideoHelperSuite loader gets from the file with its settings (VHS's own arithmetic)."""
    def number(name: str, default: float) -> float:
        value = float(params.get(name, default) or default)
        if not math.isfinite(value):
            raise ValueError(name)
        return value

    fps = number("force_rate", 0) or source["fps"]
    duration = source["duration"] - number("start_time", 0)
    if fps > 0:
        duration -= int(number("skip_first_frames", 0)) / fps
    every = int(number("select_every_nth", 1)) or 1
    fps /= every
    return {"duration": duration, "fps": fps, "frames": duration * fps}


def _may_read(kernel: Any, request: Request, kind: str, path: str) -> bool:
    """With the multiuser plugin, output and temp files are their owners' (as for ``/view``)."""
    mu = kernel.state.get("multiuser")
    if mu is None or not getattr(mu, "enabled", False) or kind not in ("output", "temp"):
        return True
    identity = getattr(request.state, "identity", None)
    if identity is not None and identity.is_admin:
        return True
    ownership = getattr(mu, "ownership", None)
    return identity is not None and ownership is not None and ownership.owns(identity, os.path.realpath(path))


def _pack_handler(kernel: Any) -> Any:
    """The handler a node pack (VideoHelperSuite) registered for the same route, if any."""
    table = getattr(kernel, "route_table", None)
    for spec in table.specs if table is not None else []:
        if spec.owner != OWNER and "GET" in spec.methods and "/api/vhs/queryvideo" in spec.paths():
            return spec.handler
    return None


async def _job_status(kernel: Any, owner: str, job_id: str) -> dict[str, Any] | None:
    from datetime import UTC, datetime

    def iso(t: float | None) -> str | None:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else None

    ex = getattr(kernel, "executor", None)
    if ex is None or not getattr(ex, "started", False):
        raise fail(503, "unavailable", "The executor is not running")
    for queued in list(ex.running.values()) + list(getattr(ex, "starting", {}).values()):
        if queued.prompt_id == job_id and queued.owner == owner:
            return {"id": job_id, "status": "in_progress", "created_at": iso(queued.created),
                    "updated_at": iso(queued.created), "last_state_update": iso(queued.created),
                    "assigned_inference": None, "error_message": None}
    for queued in list(ex.heap):
        if queued.prompt_id == job_id and queued.owner == owner:
            return {"id": job_id, "status": "pending", "created_at": iso(queued.created),
                    "updated_at": iso(queued.created), "last_state_update": iso(queued.created),
                    "assigned_inference": None, "error_message": None}
    blob = await ex.store.history_entry(owner, job_id)
    if blob is None:
        return None
    entry = orjson.loads(blob)
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    stamps = [m[1].get("timestamp") for m in messages if len(m) > 1 and isinstance(m[1], dict)
              and isinstance(m[1].get("timestamp"), (int, float))]
    started = min(stamps) / 1000 if stamps else None
    ended = max(stamps) / 1000 if stamps else None
    error = None
    state = "completed" if status.get("status_str") == "success" else "error"
    for kind, data in messages:
        if kind == "execution_interrupted":
            state = "cancelled"
        elif kind == "execution_error" and isinstance(data, dict):
            error = str(data.get("exception_message") or "").strip() or None
    times = await _history_times(ex, owner, job_id)
    created = times[0] if times and times[0] else started
    ended = times[2] if times and times[2] else ended
    created = created or ended or time.time()
    ended = ended or created
    return {"id": job_id, "status": state, "created_at": iso(created), "updated_at": iso(ended),
            "last_state_update": iso(ended), "assigned_inference": None, "error_message": error}


async def _history_times(ex: Any, owner: str, job_id: str) -> tuple[Any, Any, Any] | None:
    """(created, started, ended) of a finished prompt, from the kernel's history."""
    store = getattr(ex, "store", None)
    if store is None or not hasattr(store, "history_record"):
        return None
    try:
        found = await store.history_record(owner, job_id)
    except Exception:  # noqa: BLE001 - the times are a refinement; the entry's timestamps stand in
        return None
    return tuple(found[1:]) if found else None
