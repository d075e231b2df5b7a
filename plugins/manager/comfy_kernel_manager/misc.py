"""The rest of the ComfyUI-Manager API: settings, import failures, components,
reboot, version questions.

Settings routes accept the legacy GET (``?value=`` sets, no value reads) and
the current POST (``{"value": ...}``) forms. ``reboot`` re-executes the server
process with its original command line once the server has shut down
gracefully, so the durable queue and every shutdown hook run first.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import sys
from typing import Any

from starlette.responses import Response

from comfy_kernel import __version__ as kernel_version

from . import MANAGER_API_VERSION, __version__
from .catalog import repo_name
from .settings import COMPONENT_POLICIES, DB_MODES, PREVIEW_METHODS, UPDATE_POLICIES
from .web import body_json, ok_json, param, text

COMPONENT_NAME = re.compile(r"^[^/\\\0]{1,200}$")


def _reexec() -> None:
    """Replace this process with a fresh server (same interpreter, same arguments)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def schedule_restart(kernel: Any) -> None:
    """Shut the server down gracefully in a moment, then re-execute it (after the answer is sent)."""
    if kernel.state.get("manager_restarting"):
        return
    kernel.state["manager_restarting"] = True
    atexit.register(_reexec)
    loop = kernel.loop
    assert loop is not None
    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)


def add_routes(routes: Any, mgr: Any) -> None:
    kernel = mgr.kernel
    settings = mgr.settings

    def setting_route(path: str, key: str, choices: tuple[str, ...] | None, apply: Any = None) -> None:
        async def handler(request):
            value = await param(request, "value")
            if value is None:
                if request.method == "POST":
                    return text("a value is required", 400)
                return text(settings.get(key) or (kernel.config.preview_method if key == "preview_method" else ""))
            if choices is not None and value not in choices:
                return text(f"invalid value {value!r}; expected one of {', '.join(choices)}", 400)
            refused = mgr.guard.check(request, f"set {key}", "low")
            if refused is not None:
                return refused
            settings.set(key, value)
            if apply is not None:
                apply(value)
            return text("")
        routes.add(["GET", "POST"], path, handler)

    def set_preview(value: str) -> None:
        kernel.config.preview_method = value

    setting_route("/manager/preview_method", "preview_method", PREVIEW_METHODS, set_preview)
    setting_route("/manager/db_mode", "db_mode", DB_MODES, lambda v: mgr.catalog.invalidate())
    setting_route("/manager/policy/update", "update_policy", UPDATE_POLICIES)
    setting_route("/manager/policy/component", "component_policy", COMPONENT_POLICIES)

    @routes.route(["GET", "POST"], "/manager/channel_url_list")
    async def channel_url_list(request):
        value = await param(request, "value")
        channels = mgr.catalog.channel_list()
        if value is None:
            selected, _ = mgr.catalog.resolve_channel(settings.get("channel_url"))
            return ok_json({"selected": selected, "list": mgr.catalog.shown_channels()})
        match = next((c for c in channels if value in (c["name"], c["url"])), None)
        if match is None:
            return text(f"unknown channel {value!r}", 400)
        refused = mgr.guard.check(request, "set channel", "low")
        if refused is not None:
            return refused
        settings.set("channel_url", match["name"])
        mgr.catalog.invalidate()
        return text("")

    # --- import failures ----------------------------------------------------

    def failure_for(key: str | None) -> dict[str, Any] | None:
        if not key:
            return None
        records = kernel.host.records
        names = {key, repo_name(key), repo_name(key).removesuffix(".py")}
        for name in names:
            record = records.get(name)
            if record is not None and record.status == "failed":
                return {"name": record.name, "path": record.path, "msg": record.traceback or record.error,
                        "error": record.error, "traceback": record.traceback}
        return None

    @routes.post("/customnode/import_fail_info")
    async def import_fail_info(request):
        body = await body_json(request)
        if not body.get("cnr_id") and not body.get("url"):
            return text("cnr_id or url is required", 400)
        if any(body.get(k) is not None and not isinstance(body[k], str) for k in ("cnr_id", "url")):
            return text("cnr_id and url must be strings", 400)
        info = failure_for(body.get("cnr_id")) or failure_for(body.get("url"))
        if info is None:
            return text("no failure information", 400)
        return ok_json(info)

    @routes.get("/customnode/get_node_types_in_workflows")
    async def node_types_in_workflows(request):
        """Node types used by each saved workflow of the caller (helps find missing packs)."""
        identity = getattr(request.state, "identity", None)
        user = getattr(identity, "user_id", None) or "default"
        folder = os.path.join(kernel.dirs.user, str(user), "workflows")
        if not os.path.isdir(folder) or os.path.sep in str(user) or str(user).startswith("."):
            return ok_json([])
        out = []
        for root, _dirs, files in os.walk(folder):
            for fname in sorted(files):
                if not fname.endswith(".json"):
                    continue
                path = os.path.join(root, fname)
                try:
                    with open(path, encoding="utf-8") as f:
                        nodes = json.load(f).get("nodes") or []
                except (OSError, ValueError, AttributeError):
                    continue
                types = sorted({n.get("type") for n in nodes if isinstance(n, dict) and n.get("type")})
                out.append({"workflow_file_name": os.path.relpath(path, folder), "node_types": types})
        return ok_json(out)

    # --- components -----------------------------------------------------------

    components_dir = os.path.join(mgr.dir, "components")

    @routes.post("/manager/component/save")
    async def component_save(request):
        body = await body_json(request)
        name, workflow = body.get("name"), body.get("workflow")
        if not isinstance(name, str) or not COMPONENT_NAME.match(name) or name.startswith(".") \
                or ".." in name or not isinstance(workflow, dict):
            return text("invalid component: a safe name and a workflow object are required", 400)
        os.makedirs(components_dir, exist_ok=True)
        path = os.path.join(components_dir, name + ".json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(workflow, f)
        os.replace(path + ".tmp", path)
        return text(name)

    @routes.post("/manager/component/loads")
    async def component_loads(request):
        out = {}
        if os.path.isdir(components_dir):
            for fname in sorted(os.listdir(components_dir)):
                if fname.endswith(".json"):
                    try:
                        with open(os.path.join(components_dir, fname), encoding="utf-8") as f:
                            out[fname[:-5]] = json.load(f)
                    except (OSError, ValueError):
                        continue
        return ok_json(out)

    # --- the server itself --------------------------------------------------------

    @routes.route(["GET", "POST"], "/manager/reboot")
    async def reboot(request):
        refused = mgr.guard.check(request, "reboot", "middle")
        if refused is not None:
            return refused
        schedule_restart(kernel)
        return text("rebooting")

    @routes.get("/comfyui_manager/comfyui_versions")
    async def comfyui_versions(request):
        current = f"comfy-kernel {kernel_version}"
        return ok_json({"versions": [current], "current": current})

    @routes.route(["GET", "POST"], "/comfyui_manager/comfyui_switch_version")
    async def switch_version(request):
        ver = await param(request, "ver")
        current = f"comfy-kernel {kernel_version}"
        if ver in (current, kernel_version):
            return text(f"already at {current}")
        return text(f"comfy-kernel is installed with pip, not a ComfyUI git checkout; it cannot switch to "
                    f"{ver!r} here. Use pip to change its version.", 400)

    @routes.get("/manager/version")
    async def version(request):
        return text(MANAGER_API_VERSION)

    @routes.get("/manager/notice")
    async def notice(request):
        level = settings.security_level
        html = (f"<p>comfy-kernel {kernel_version} with its manager plugin {__version__} "
                f"(ComfyUI-Manager API {MANAGER_API_VERSION}).</p>"
                f"<p>Security level: <b>{level}</b>. Node packs install as pip packages, git clones or "
                f"single files.</p>")
        return Response(html, media_type="text/html")

    @routes.get("/manager/security_level")
    async def security_level(request):
        return ok_json({"security_level": settings.security_level, "local": mgr.guard.local})



