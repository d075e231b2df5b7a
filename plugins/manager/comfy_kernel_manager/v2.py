"""The ComfyUI-Manager 4 API (``/v2/...``, mirrored at ``/api/v2/...``): what the frontend's Nodes Manager calls.

Every route runs on the same task queue, packs, catalog, snapshots and
security levels as the 3.x routes beside it; only the shapes differ:

* Tasks are queued as ``{kind, params, ui_id, client_id}`` on
  ``manager/queue/task`` and report through ``cm-task-started`` /
  ``cm-task-completed`` to the tab that queued them (see :mod:`.queue`).
  ``install`` takes a registry id and version (:mod:`.registry`); ``update``,
  ``fix``, ``uninstall`` and ``disable`` a ``node_name``; ``enable`` a
  ``cnr_id``.
* State changes only by POST, under Manager 4's CSRF rule
  (:meth:`.security.Guard.check_post`): no form content types, JSON bodies,
  nothing from another site.
* Errors are JSON ``{"error": ..., "message": ...}``; a refused operation is
  403, bad input 400.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from comfy_kernel import __version__ as kernel_version
from comfy_kernel.http import JSONTooDeep, json_response, loads_checked

from . import registry
from .catalog import repo_name
from .models import ModelError
from .packs import PackError
from .security import content_type, is_json_type, v2_error
from .settings import DB_MODES, UPDATE_POLICIES
from .snapshots import SnapshotError

log = logging.getLogger(__name__)

MANAGER_V4_VERSION = "V4.2.2"  # the Manager 4 API version these routes answer to
KINDS = ("install", "uninstall", "update", "fix", "disable", "enable", "install-model", "update-comfyui")
# Each kind's risk (see security.py); install and install-model are decided per request.
RISK = {"uninstall": "middle", "update": "middle", "fix": "middle", "update-comfyui": "middle",
        "disable": "low", "enable": "low"}
ID_FIELD = {"uninstall": "node_name", "update": "node_name", "fix": "node_name", "disable": "node_name",
            "enable": "cnr_id", "install": "id"}
MAX_ID = 200
UI_ID = re.compile(r"^[\w.:@/+-]{1,200}$")


class BadRequest(Exception):
    """Bad input: answered with 400 and the message."""


async def read_body(request: Request, required: bool = True) -> dict[str, Any]:
    """The JSON object body. A non-empty body must be sent as ``application/json``."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        return {}
    kind = content_type(request)
    if not is_json_type(kind):
        raise BadRequest(f"the body must be sent as application/json (got {kind or 'no Content-Type'!r})")
    try:
        value = loads_checked(raw)
    except JSONTooDeep as exc:
        raise BadRequest(str(exc)) from None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def text_field(data: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{key!r} is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_ID or "\0" in value:
        raise BadRequest(f"{key!r} must be a string of at most {MAX_ID} characters")
    return value


def task_ids(data: dict[str, Any]) -> tuple[str, str]:
    ui_id = text_field(data, "ui_id")
    client_id = text_field(data, "client_id")
    assert ui_id is not None and client_id is not None
    if not UI_ID.match(ui_id):
        raise BadRequest("'ui_id' may hold letters, digits and . _ : @ / + - only")
    return ui_id, client_id


def int_param(request: Request, name: str, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be an integer") from None
    if value < minimum:
        raise BadRequest(f"{name!r} must be at least {minimum}")
    return value


def handle_errors(fn: Any) -> Any:
    """Turn BadRequest into 400 (the routes validate by raising it)."""
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except BadRequest as exc:
            return v2_error(400, str(exc))
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def ok() -> Response:
    return Response(b"", status_code=200)


# --- running a queued Manager 4 task (in the queue's worker thread) ---------------


def run_task(mgr: Any, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Do one Manager 4 task; the result is the queue's usual ``{ok, msg, ...}``."""
    packs = mgr.packs
    if kind == "install":
        return registry.install(mgr, params, allow_untrusted_git=mgr.guard.allows("high"))
    if kind == "install-model":
        return mgr.run_task("install_model", params)
    if kind == "update-comfyui":
        return mgr.run_task("update_comfyui", params)
    key = str(params.get(ID_FIELD.get(kind, "node_name")) or "")
    pack = packs.find({"id": key}) if key else None
    if pack is None:
        raise PackError(f"{key or '(no name)'} is not installed")
    if kind == "uninstall":
        return packs.uninstall(pack)
    if kind == "disable":
        return packs.disable(pack)
    if kind == "enable":
        return packs.enable(pack)
    if kind == "update":
        return packs.update(pack, {})
    if kind == "fix":
        return packs.fix(pack)
    raise PackError(f"unknown task kind {kind!r}")


# --- routes ------------------------------------------------------------------------


def add_routes(routes: Any, mgr: Any) -> None:  # noqa: C901 - one flat list of small handlers
    kernel = mgr.kernel
    queue = mgr.queue
    settings = mgr.settings

    def route(method: str, path: str) -> Any:
        def deco(fn: Any) -> Any:
            routes.add(method, "/v2" + path, handle_errors(fn))
            return fn
        return deco

    # --- the task queue --------------------------------------------------------

    async def enqueue(kind: str, ui_id: str, client_id: str, params: dict[str, Any]) -> Response:
        if await queue.busy_ui_id(ui_id):
            return v2_error(409, f"a task with ui_id {ui_id!r} is already queued")
        await queue.add(kind, {"api": 2, "ui_id": ui_id, "client_id": client_id, "params": params})
        return ok()

    def install_risk(params: dict[str, Any]) -> str:
        """A registry pack is ``middle``; installing from a repository URL nobody vouches for is ``high``."""
        pack_id = str(params.get("id") or "")
        if registry.requested_version(params) != "nightly" or not params.get("repository"):
            return "middle"
        channel = mgr.channel(params.get("mode") if isinstance(params.get("mode"), str) else None)
        trusted = channel.find(pack_id) or channel.find(str(params["repository"]))
        return "middle" if trusted else "high"

    def model_risk(params: dict[str, Any]) -> str:
        known = any(m.get("url") == params.get("url") for m in mgr.channel().models)
        return "middle" if known else "high"

    def check_model(params: dict[str, Any]) -> None:
        for key in ("url", "filename"):
            text_field(params, key)
        if urllib.parse.urlsplit(str(params["url"])).scheme.lower() not in ("http", "https"):
            raise BadRequest("the model URL must be http(s)")
        try:
            mgr.models.target(params)
        except ModelError as exc:
            raise BadRequest(str(exc)) from None

    @route("POST", "/manager/queue/task")
    async def queue_task(request):
        """Queue ``{kind, params, ui_id, client_id}``; the queue starts with ``queue/start``."""
        refused = mgr.guard.check_post(request, "queue task", "low")
        if refused is not None:
            return refused
        body = await read_body(request)
        kind = body.get("kind")
        if kind not in KINDS:
            raise BadRequest(f"'kind' must be one of {', '.join(KINDS)}")
        ui_id, client_id = task_ids(body)
        params = body.get("params")
        if params is None and kind == "update-comfyui":
            params = {}
        if not isinstance(params, dict):
            raise BadRequest("'params' must be an object")
        if kind in ID_FIELD:
            text_field(params, ID_FIELD[kind])
        if kind == "install":
            for key in ("selected_version", "version", "repository", "mode", "channel"):
                text_field(params, key, required=False)
            risk = install_risk(params)
        elif kind == "install-model":
            check_model(params)
            risk = model_risk(params)
        else:
            risk = RISK[kind]
        refused = mgr.guard.check_post(request, kind, risk)
        if refused is not None:
            return refused
        return await enqueue(kind, ui_id, client_id, params)

    @route("POST", "/manager/queue/install_model")
    async def install_model(request):
        refused = mgr.guard.check_post(request, "install model", "low")
        if refused is not None:
            return refused
        body = await read_body(request)
        ui_id, client_id = task_ids(body)
        params = {k: v for k, v in body.items() if k not in ("ui_id", "client_id")}
        check_model(params)
        refused = mgr.guard.check_post(request, "install model", model_risk(params))
        if refused is not None:
            return refused
        return await enqueue("install-model", ui_id, client_id, params)

    @route("POST", "/manager/queue/update_all")
    async def update_all(request):
        """Queue an update of every enabled git and pip pack (``ui_id`` ``<base>_<pack>``)."""
        refused = mgr.guard.check_post(request, "update all", "middle")
        if refused is not None:
            return refused
        q = request.query_params
        ui_id, client_id = task_ids({"ui_id": q.get("ui_id"), "client_id": q.get("client_id")})
        if q.get("mode") and q["mode"] not in DB_MODES:
            raise BadRequest(f"'mode' must be one of {', '.join(DB_MODES)}")
        installed = await asyncio.to_thread(mgr.packs.installed, False)
        for pack in installed:
            if pack.enabled and pack.kind in ("git", "pip"):
                await queue.add("update", {"api": 2, "ui_id": f"{ui_id}_{pack.pack_id}", "client_id": client_id,
                                           "params": {"node_name": pack.pack_id, "node_ver": pack.version}})
        return ok()

    @route("POST", "/manager/queue/update_comfyui")
    async def update_comfyui(request):
        refused = mgr.guard.check_post(request, "update comfyui", "middle")
        if refused is not None:
            return refused
        q = request.query_params
        ui_id, client_id = task_ids({"ui_id": q.get("ui_id"), "client_id": q.get("client_id")})
        stable = q.get("stable", q.get("is_stable", "true")).lower() not in ("false", "0")
        return await enqueue("update-comfyui", ui_id, client_id, {"is_stable": stable})

    @route("POST", "/manager/queue/start")
    async def queue_start(request):
        """200 when the worker starts, 201 when it is already running."""
        refused = mgr.guard.check_post(request, "start queue", "low")
        if refused is not None:
            return refused
        return Response(b"", status_code=200 if queue.start() else 201)

    @route("POST", "/manager/queue/reset")
    async def queue_reset(request):
        """Drop the pending tasks (the running one finishes; history stays)."""
        refused = mgr.guard.check_post(request, "reset queue", "low")
        if refused is not None:
            return refused
        await queue.drop_pending()
        return ok()

    @route("GET", "/manager/queue/status")
    async def queue_status(request):
        return json_response(await queue.status_v2(request.query_params.get("client_id") or None))

    @route("GET", "/manager/queue/history")
    async def queue_history(request):
        """This run's task history (filters ``client_id``, ``ui_id``, ``max_items``, ``offset``), or a batch by ``id``."""
        q = request.query_params
        if "id" in q:
            record = await queue.batch(q["id"])
            if record is None:
                return v2_error(400, f"no batch history {q['id']!r}")
            return json_response(record)
        max_items = int_param(request, "max_items", 1)
        offset = int_param(request, "offset", -1)
        history = await queue.history(q.get("client_id") or None, q.get("ui_id") or None, max_items,
                                      -1 if offset is None else offset)
        if q.get("ui_id"):
            return json_response({"history": next(iter(history.values()), {})})
        return json_response({"history": history})

    @route("GET", "/manager/queue/history_list")
    async def queue_history_list(request):
        return json_response({"ids": await queue.batch_ids()})

    @route("POST", "/manager/reboot")
    async def reboot(request):
        refused = mgr.guard.check_post(request, "reboot", "middle")
        if refused is not None:
            return refused
        from .misc import schedule_restart
        schedule_restart(kernel)
        return ok()

    # --- node packs ---------------------------------------------------------------

    @route("GET", "/customnode/installed")
    async def installed(request):
        """``{pack id: {ver, cnr_id, aux_id, enabled}}``; ``mode=imported`` as this server run imported them."""
        mode = request.query_params.get("mode", "default")
        if mode not in ("default", "imported"):
            raise BadRequest("'mode' must be default or imported")
        if mode == "imported":
            return json_response(mgr.imported_v2)
        return json_response(await asyncio.to_thread(mgr.installed_v2))

    @route("GET", "/customnode/getmappings")
    async def getmappings(request):
        """The catalog's node-to-pack map; names of loaded nodes matching a pack's ``nodename_pattern`` join it."""
        mode = request.query_params.get("mode")
        channel = mgr.channel("local" if mode == "nickname" else mode)
        mappings = {k: [list(v[0]), dict(v[1]) if len(v) > 1 and isinstance(v[1], dict) else {}]
                    for k, v in channel.mappings.items() if isinstance(v, list) and v and isinstance(v[0], list)}
        known = {name for nodes, _meta in mappings.values() for name in nodes}
        patterns = [(meta["nodename_pattern"], nodes) for nodes, meta in mappings.values()
                    if isinstance(meta.get("nodename_pattern"), str)]
        for name in sorted(set(kernel.nodes.names()) - known) if patterns else []:
            for pattern, nodes in patterns:
                try:
                    if re.match(pattern, name):
                        nodes.append(name)
                except re.error:
                    continue
        return json_response(mappings)

    @route("GET", "/customnode/fetch_updates")
    async def fetch_updates(request):
        """``git fetch`` every git pack: 201 with the packs that are behind, 200 when none is."""
        try:
            result = await asyncio.to_thread(mgr.packs.updatable)
        except Exception as exc:
            return v2_error(400, str(exc))
        behind = sorted(name for name, flag in result.items() if flag)
        return json_response({"updatable": behind}, 201 if behind else 200)

    def failure_for(key: str) -> dict[str, Any] | None:
        records = kernel.host.records
        names = [key, repo_name(key), repo_name(key).removesuffix(".py")]
        pack = mgr.packs.find({"id": key, **({"reference": key} if "/" in key else {})})
        if pack is not None:
            names.insert(0, pack.name)
        for name in names:
            record = records.get(name)
            if record is not None and record.status == "failed":
                return {"name": record.name, "path": record.path, "msg": record.traceback or record.error,
                        "error": record.error or "", "traceback": record.traceback or ""}
        return None

    async def import_fail_info(request):
        """One pack's import failure by ``cnr_id`` or ``url`` (body, or query for GET); a GET
        without either lists every failed pack."""
        if request.method == "POST":
            refused = mgr.guard.check_post(request, "import fail info", "low")
            if refused is not None:
                return refused
            body = await read_body(request)
        else:
            body = dict(request.query_params)
            if not body.get("cnr_id") and not body.get("url"):
                failed = {r.name: {"error": r.error or "", "traceback": r.traceback or ""}
                          for r in kernel.host.records.values() if r.status == "failed" and r.kind == "node_pack"}
                return json_response(failed)
        key = text_field(body, "cnr_id", required=False) or text_field(body, "url", required=False)
        if key is None:
            raise BadRequest("'cnr_id' or 'url' is required")
        info = await asyncio.to_thread(failure_for, key)
        if info is None:
            return v2_error(400, f"no import failure recorded for {key!r}")
        return json_response(info)

    routes.add(["GET", "POST"], "/v2/customnode/import_fail_info", handle_errors(import_fail_info))

    @route("POST", "/customnode/import_fail_info_bulk")
    async def import_fail_info_bulk(request):
        """``{cnr_ids: [...], urls: [...]}`` → ``{key: {error, traceback} | null}``."""
        refused = mgr.guard.check_post(request, "import fail info", "low")
        if refused is not None:
            return refused
        body = await read_body(request)
        cnr_ids, urls = body.get("cnr_ids") or [], body.get("urls") or []
        if not isinstance(cnr_ids, list) or not isinstance(urls, list) or not (cnr_ids or urls):
            raise BadRequest("'cnr_ids' or 'urls' (lists of strings) is required")
        if not all(isinstance(k, str) and len(k) <= MAX_ID for k in [*cnr_ids, *urls]) or len(cnr_ids) + len(urls) > 1000:
            raise BadRequest("'cnr_ids' and 'urls' must hold at most 1000 strings")

        def collect() -> dict[str, Any]:
            out = {}
            for key in [*cnr_ids, *urls]:
                info = failure_for(key)
                out[key] = {"error": info["error"], "traceback": info["traceback"]} if info else None
            return out

        return json_response(await asyncio.to_thread(collect))

    # --- snapshots -------------------------------------------------------------------

    snaps = mgr.snapshots

    @route("GET", "/snapshot/getlist")
    async def snapshot_getlist(request):
        return json_response({"items": snaps.list()})

    @route("GET", "/snapshot/get_current")
    async def snapshot_current(request):
        return json_response(await asyncio.to_thread(snaps.current))

    @route("POST", "/snapshot/save")
    async def snapshot_save(request):
        refused = mgr.guard.check_post(request, "save snapshot", "low")
        if refused is not None:
            return refused
        name = await asyncio.to_thread(snaps.save)
        return json_response({"name": name})

    def snapshot_target(request: Request) -> str:
        target = request.query_params.get("target") or ""
        if not target:
            raise BadRequest("'target' (query) is required")
        try:
            snaps.load(target)
        except SnapshotError as exc:
            raise BadRequest(str(exc)) from None
        return target

    @route("POST", "/snapshot/remove")
    async def snapshot_remove(request):
        refused = mgr.guard.check_post(request, "remove snapshot", "middle")
        if refused is not None:
            return refused
        snaps.remove(snapshot_target(request))
        return ok()

    @route("POST", "/snapshot/restore")
    async def snapshot_restore(request):
        """Restore now (not at the next start as Manager 4 does); the answer lists every step."""
        refused = mgr.guard.check_post(request, "restore snapshot", "middle")
        if refused is not None:
            return refused
        target = snapshot_target(request)
        steps = await asyncio.to_thread(snaps.restore, target)
        good = all(s["ok"] for s in steps)
        return json_response({"target": target, "ok": good, "steps": steps}, 200 if good else 400)

    # --- settings and the server -----------------------------------------------------

    def setting(path: str, key: str, choices: tuple[str, ...]) -> None:
        async def get_value(request):
            return PlainTextResponse(settings.get(key))

        async def set_value(request):
            refused = mgr.guard.check_post(request, f"set {key}", "low")
            if refused is not None:
                return refused
            value = text_field(await read_body(request), "value")
            if value not in choices:
                raise BadRequest(f"invalid value {value!r}; expected one of {', '.join(choices)}")
            settings.set(key, value)
            if key == "db_mode":
                mgr.catalog.invalidate()
            return ok()

        routes.add("GET", "/v2" + path, handle_errors(get_value))
        routes.add("POST", "/v2" + path, handle_errors(set_value))

    setting("/manager/db_mode", "db_mode", DB_MODES)
    setting("/manager/policy/update", "update_policy", UPDATE_POLICIES)

    @route("GET", "/manager/channel_url_list")
    async def channel_list(request):
        selected, _ = mgr.catalog.resolve_channel(settings.get("channel_url"))
        return json_response({"selected": selected, "list": mgr.catalog.shown_channels()})

    @route("POST", "/manager/channel_url_list")
    async def set_channel(request):
        refused = mgr.guard.check_post(request, "set channel", "low")
        if refused is not None:
            return refused
        value = text_field(await read_body(request), "value")
        match = next((c for c in mgr.catalog.channel_list() if value in (c["name"], c["url"])), None)
        if match is None:
            raise BadRequest(f"unknown channel {value!r}")
        settings.set("channel_url", match["name"])
        mgr.catalog.invalidate()
        return ok()

    @route("GET", "/manager/is_legacy_manager_ui")
    async def is_legacy_ui(request):
        return json_response({"is_legacy_manager_ui": bool(getattr(kernel.config, "enable_manager_legacy_ui", False))})

    @route("GET", "/manager/version")
    async def version(request):
        return PlainTextResponse(MANAGER_V4_VERSION)

    @route("GET", "/comfyui_manager/comfyui_versions")
    async def comfyui_versions(request):
        current = f"comfy-kernel {kernel_version}"
        return json_response({"versions": [current], "current": current})

    @route("POST", "/comfyui_manager/comfyui_switch_version")
    async def comfyui_switch_version(request):
        """comfy-kernel is a pip install, not a ComfyUI git checkout: only its own version is "switchable"."""
        refused = mgr.guard.check_post(request, "switch comfyui version", "high")
        if refused is not None:
            return refused
        body = await read_body(request)
        ver = text_field(body, "ver")
        task_ids(body)
        if ver in (f"comfy-kernel {kernel_version}", kernel_version):
            return ok()
        raise BadRequest(f"comfy-kernel is installed with pip, not a ComfyUI git checkout; it cannot switch to "
                         f"{ver!r} here. Use pip to change its version.")
