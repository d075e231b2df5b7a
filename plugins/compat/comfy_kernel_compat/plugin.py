"""The compat plugin's hooks: serve what node packs declared through ComfyUI's API.

Importing this module installs the import hook (the kernel normally did so
already through the ``comfy_kernel.preload`` entry point). The hooks then
capture the kernel for the ComfyUI-named modules, register the routes packs
declared on ``PromptServer.instance`` (mirrored at ``/api``), serve their
static directories and run their ``app.on_startup``/``on_shutdown``
callbacks. The per-prompt hooks behind ``PromptServer.instance`` are in
:mod:`.server_hooks`, registered only when a pack imports ``server``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from typing import Any

from comfy_kernel import hookimpl

from . import finder, server_hooks, state
from .web import PACK_ROUTES, adapt_handler, starlette_path

log = logging.getLogger(__name__)

finder.install()

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def _server_module() -> Any:
    """The ``server`` module if some pack imported it (never imported just for this)."""
    module = sys.modules.get("server")
    return module if module is not None and hasattr(module, "PromptServer") else None


def _app() -> Any:
    module = _server_module()
    return module.PromptServer.instance.app if module is not None else None


@hookimpl
def ck_register_model_folders(folders: Any) -> None:
    from comfy_kernel.kernel import current_kernel

    kernel = current_kernel()
    if kernel is not None and kernel.folders is folders:
        state.set_kernel(kernel)


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    state.set_kernel(kernel)
    app = _app()
    for route in PACK_ROUTES:
        if route.method == "STATIC":
            continue
        methods = ALL_METHODS if route.method == "*" else [route.method]
        if route.method == "GET" and route.kwargs.get("allow_head", True):
            methods = ["GET", "HEAD"]
        try:
            routes.add(methods, starlette_path(route.path), adapt_handler(route.handler, app),
                       name=route.kwargs.get("name"))
        except Exception:
            log.exception("route %s %s from a node pack could not be registered", route.method, route.path)
    if app is not None:
        app.freeze()  # routes added from now on are not served: packs that check ``app.frozen`` see it


@hookimpl
def ck_static_directories(kernel: Any) -> list[tuple[str, str]]:
    out = []
    for route in PACK_ROUTES:
        if route.method == "STATIC" and os.path.isdir(route.handler):
            out.append((route.path, route.handler))
    return out


async def _run_callbacks(callbacks: list[Any], app: Any, what: str) -> None:
    for callback in list(callbacks):
        try:
            result = callback(app)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("a node pack's %s callback failed", what)


@hookimpl
async def ck_startup(kernel: Any) -> None:
    state.set_kernel(kernel)
    server_hooks.register(kernel)
    app = _app()
    if app is None:
        return
    if app.middlewares:
        log.warning("%d aiohttp middleware(s) added by node packs are not applied on comfy-kernel",
                    len(app.middlewares))
    await _run_callbacks(app.on_startup, app, "on_startup")


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    app = _app()
    if app is not None:
        await _run_callbacks(app.on_shutdown, app, "on_shutdown")
        await _run_callbacks(app.on_cleanup, app, "on_cleanup")
