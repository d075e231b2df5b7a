"""Entry point of the ``assets`` plugin: wires the library into the kernel's hooks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from comfy_kernel import hookimpl
from comfy_kernel.storage import Migrations

from . import routes as asset_routes
from .library import AssetLibrary

log = logging.getLogger(__name__)

# The kernel calls ck_register_routes before ck_startup, so the library object
# exists from route registration on and its database opens at start-up.
_library: AssetLibrary | None = None


def library(kernel: Any) -> AssetLibrary:
    global _library
    if _library is None or _library.kernel is not kernel:
        _library = AssetLibrary(kernel)
    return _library


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    from . import seeding, tasks

    lib = library(kernel)
    # Fixed paths (/assets/download, /assets/remote-metadata...) first: Starlette
    # takes the first matching route, and /assets/{id} would match them too.
    first = len(routes.specs)
    tasks.register(routes, lib)
    seeding.register(routes, lib)
    asset_routes.register(routes, lib)
    # ComfyUI serves the asset library under /api only: a bare /assets/... would
    # shadow the web frontend's own /assets/*.js files.
    for spec in routes.specs[first:]:
        spec.api_only = True


@hookimpl
def ck_migrations(kernel: Any) -> list[Migrations]:
    """The library's tables (``store``), created and upgraded by the kernel before ``ck_startup``."""
    from .migrations import ASSETS

    return [ASSETS]


@hookimpl
async def ck_startup(kernel: Any) -> None:
    lib = library(kernel)
    await lib.open()
    failed = await lib.store.fail_interrupted_tasks()
    if failed:
        log.warning("assets: marked %d interrupted task(s) as failed", failed)


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    if _library is not None:
        await _library.close()


@hookimpl
def ck_feature_flags(kernel: Any) -> dict[str, Any]:
    return {"assets": True}


@hookimpl
def ck_prompt_finished(event: dict[str, Any]) -> None:
    """Turn a finished prompt's output files into assets of its owner.

    The executor may fire this from its own thread or on the event loop; the
    work always runs on the loop, since the database connection lives there.
    """
    lib = _library
    if lib is None or not lib.store.ready or lib.kernel.loop is None or not _has_output_files(event):
        return
    from .seeding import ingest_outputs

    coro = ingest_outputs(lib, dict(event))
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is lib.kernel.loop:
        lib.spawn(coro)
    else:
        asyncio.run_coroutine_threadsafe(coro, lib.kernel.loop)


def _has_output_files(event: dict[str, Any]) -> bool:
    """Whether the prompt reported any file of type ``output`` (previews and text need no task)."""
    outputs = event.get("outputs")
    for node_output in outputs.values() if isinstance(outputs, dict) else ():
        for items in node_output.values() if isinstance(node_output, dict) else ():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and item.get("type", "output") == "output" and "filename" in item:
                    return True
    return False
