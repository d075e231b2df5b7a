"""Entry point of the manager plugin: wires settings, catalog, packs, queue and routes.

One :class:`Manager` per server lives in ``kernel.state["manager"]``. Its
working files sit in ``<user>/__manager/`` (config.ini, channels.list,
snapshots, components); the task queue lives in the kernel's shared SQLite
database so it survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from comfy_kernel import hookimpl

from . import catalog as catalog_mod
from . import misc
from . import models as models_mod
from . import packs as packs_mod
from . import queue as queue_mod
from . import snapshots as snapshots_mod
from .catalog import Catalog
from .models import Models
from .packs import PackError, Packs
from .queue import TaskQueue
from .security import Guard
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
        self.queue = TaskQueue(self, kernel.database_path)
        self.guard = Guard(self)

    def channel(self, mode: str | None = None) -> catalog_mod.Channel:
        mode = mode if mode in ("local", "remote", "cache", "channel") else self.settings.get("db_mode")
        return self.catalog.get(self.settings.get("channel_url"), mode)

    # --- tasks (run in a worker thread by the queue) --------------------------

    def run_task(self, kind: str, item: dict[str, Any]) -> dict[str, Any]:
        packs = self.packs
        if kind == "install":
            return packs.install(item)
        if kind == "install_model":
            last = [0.0]

            def progress(done: int, total: int | None) -> None:
                pct = int(done * 100 / total) if total else -1
                if pct - last[0] >= 5 or pct == 100:
                    last[0] = pct
                    self.kernel.ws.send("cm-queue-status", {"status": "in_progress", "target": item.get("ui_id"),
                                                            "ui_target": "install_model", "progress": pct,
                                                            "downloaded": done, "total": total})

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


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    mgr = _manager(kernel)
    catalog_mod.add_routes(routes, mgr)
    packs_mod.add_routes(routes, mgr)
    queue_mod.add_routes(routes, mgr)
    models_mod.add_routes(routes, mgr)
    snapshots_mod.add_routes(routes, mgr)
    misc.add_routes(routes, mgr)


@hookimpl
async def ck_startup(kernel: Any) -> None:
    mgr = _manager(kernel)
    mgr.packs.apply_disabled_pip()
    mgr.packs.imported_at_start = {p.name: p.info() for p in mgr.packs.installed(commits=False) if p.enabled}
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
