"""Entry point of the manager plugin: wires settings, catalog, packs, queue and routes.

One :class:`Manager` per server lives in ``kernel.state["manager"]``. Its
working files sit in ``<user>/__manager/`` (config.ini, channels.list,
snapshots, components); the task queue lives in the kernel's database (SQLite
or PostgreSQL, tables created by this plugin's migrations) so it survives
restarts.

The frontend shows its own Nodes Manager only when ``/system_stats`` lists
``--enable-manager`` in ``system.argv`` and the server's feature flags carry
``extension.manager.supports_v4`` and ``supports_csrf_post``: the options and
flags are added here, the Manager 4 routes live in :mod:`.v2`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from comfy_kernel import hookimpl
from comfy_kernel.routing import RouteTable
from comfy_kernel.storage import Migrations

from . import catalog as catalog_mod
from . import misc
from . import models as models_mod
from . import packs as packs_mod
from . import queue as queue_mod
from . import snapshots as snapshots_mod
from . import v2 as v2_mod
from .catalog import Catalog
from .models import Models
from .packs import PackError, Packs
from .queue import TaskQueue
from .security import Guard, admin_only
from .settings import Settings
from .snapshots import Snapshots

log = logging.getLogger(__name__)


class Manager:
    """Shared state of the plugin for one running kernel."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        self.dir = os.path.join(kernel.dirs.user, "__manager")
        overrides = {"security_level": getattr(kernel.config, "manager_security_level", None)}
        self.settings = Settings(self.dir, overrides)
        self.catalog = Catalog(os.path.join(self.dir, "cache"), os.path.join(self.dir, "channels.list"))
        self.packs = Packs(kernel, self.dir)
        extra = self.settings.get("protected_packages")
        self.packs.extra_protected = {p.strip() for p in extra.split(",") if p.strip()}
        self.models = Models(kernel)
        self.snapshots = Snapshots(self.packs, os.path.join(self.dir, "snapshots"))
        self.queue = TaskQueue(self, kernel.database)
        self.guard = Guard(self)
        self.imported_v2: dict[str, Any] = {}  # the installed packs as this server run imported them

    def installed_v2(self) -> dict[str, Any]:
        """Manager 4's installed-pack map: ``{pack id: {ver, cnr_id, aux_id, enabled}}``.

        An enabled pack wins over a disabled one of the same id; other disabled
        ones are listed as ``id@version`` as Manager 4 does.
        """
        out: dict[str, Any] = {}
        packs = sorted(self.packs.installed(commits=False), key=lambda p: not p.enabled)
        for pack in packs:
            key = pack.pack_id
            if key in out:
                if pack.enabled:
                    continue
                key = f"{key}@{(pack.version or 'unknown').replace('.', '_')}"
            out[key] = pack.info_v2()
        return out

    def channel(self, mode: str | None = None) -> catalog_mod.Channel:
        mode = mode if mode in ("local", "remote", "cache", "channel") else self.settings.get("db_mode")
        return self.catalog.get(self.settings.get("channel_url"), mode)

    # --- tasks (run in a worker thread by the queue) --------------------------

    def run_task(self, kind: str, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("api") == 2:
            return v2_mod.run_task(self, kind, item.get("params") or {})
        packs = self.packs
        if kind == "install":
            return packs.install(item)
        if kind == "install_model":
            last = [0.0]

            def progress(done: int, total: int | None) -> None:
                pct = int(done * 100 / total) if total else -1
                if pct - last[0] >= 5 or pct == 100:
                    last[0] = pct
                    self.queue.send_queue_status({"status": "in_progress", "target": item.get("ui_id"),
                                         "ui_target": "install_model", "progress": pct, "downloaded": done,
                                         "total": total})

            return self.models.download(item, progress)
        if kind == "update_comfyui":
            return {"ok": False, "msg": "comfy-kernel is not a ComfyUI git checkout; update it with pip "
                                        "(pip install -U comfy-kernel). Nothing was changed."}
        pack = packs.find(item)
        if pack is None:
            raise PackError(f"{item.get('id') or item.get('name') or item.get('files')} is not installed")
        if kind == "uninstall":
            return packs.uninstall(pack)
        if kind == "disable":
            return packs.disable(pack)
        if kind == "enable":
            return packs.enable(pack)
        if kind == "update":
            return packs.update(pack, item)
        if kind == "fix":
            return packs.fix(pack)
        if kind == "reinstall":
            source = dict(item)
            if pack.kind == "git" and pack.url:
                source.setdefault("files", [pack.url])
                source.setdefault("install_type", "git-clone")
            elif pack.kind == "pip":
                source.setdefault("install_type", "pip")
                source.setdefault("pip", [pack.dist or pack.name])
            packs.uninstall(pack)
            return packs.install(source)
        raise PackError(f"unknown task kind {kind!r}")


def _manager(kernel: Any) -> Manager:
    mgr = kernel.state.get("manager")
    if mgr is None:
        mgr = kernel.state["manager"] = Manager(kernel)
    return mgr


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    parser.add_argument("--manager-security-level", default=None, choices=["strong", "normal", "normal-", "weak"],
                        help="ComfyUI-Manager security level (overrides the manager's config.ini)")
    parser.add_argument("--enable-manager", action="store_true",
                        help="show the frontend's Nodes Manager (the Extensions button; ComfyUI's flag)")
    parser.add_argument("--enable-manager-legacy-ui", action="store_true",
                        help="ask the frontend for ComfyUI-Manager's legacy UI instead (implies --enable-manager)")


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    mgr = _manager(kernel)
    own = RouteTable(owner=routes.owner)
    catalog_mod.add_routes(own, mgr)
    packs_mod.add_routes(own, mgr)
    queue_mod.add_routes(own, mgr)
    models_mod.add_routes(own, mgr)
    snapshots_mod.add_routes(own, mgr)
    misc.add_routes(own, mgr)
    v2_mod.add_routes(own, mgr)
    for spec in own.specs:  # under --auth, every manager route is for administrators
        routes.add(spec.methods, spec.path, admin_only(spec.handler), api_mirror=spec.api_mirror,
                   api_only=spec.api_only, name=spec.name)


def manager_argv(config: Any) -> list[str]:
    """The flags the frontend looks for in ``system.argv``, however they were given (CLI, env, file)."""
    legacy = bool(getattr(config, "enable_manager_legacy_ui", False))
    flags = []
    if legacy or getattr(config, "enable_manager", False):
        flags.append("--enable-manager")
    if legacy:
        flags.append("--enable-manager-legacy-ui")
    return flags


@hookimpl
def ck_feature_flags(kernel: Any) -> dict[str, Any]:
    return {"extension": {"manager": {"supports_v4": True, "supports_csrf_post": True}}}


@hookimpl
def ck_system_stats(kernel: Any) -> dict[str, Any]:
    missing = [f for f in manager_argv(kernel.config) if f not in sys.argv]
    return {"argv": [*sys.argv, *missing]} if missing else {}


@hookimpl
def ck_migrations(kernel: Any) -> list[Migrations]:
    """The task queue's tables (``store``), created and upgraded by the kernel before ``ck_startup``."""
    from .migrations import MANAGER

    return [MANAGER]


@hookimpl
async def ck_startup(kernel: Any) -> None:
    mgr = _manager(kernel)
    mgr.packs.apply_disabled_pip()
    mgr.packs.imported_at_start = {p.name: p.info() for p in mgr.packs.installed(commits=False) if p.enabled}
    mgr.imported_v2 = {k: v for k, v in mgr.installed_v2().items() if v["enabled"]}
    method = mgr.settings.get("preview_method")
    if method:
        kernel.config.preview_method = method
    await mgr.queue.open()
    # parse the catalog in the background so the first listing is already warm
    asyncio.get_running_loop().run_in_executor(None, mgr.channel)


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    mgr = kernel.state.get("manager")
    if mgr is not None:
        await mgr.queue.close()
