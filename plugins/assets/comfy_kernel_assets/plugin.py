"""Entry point of the ``assets`` plugin: wires the library into the kernel's hooks."""

from __future__ import annotations

import logging
from typing import Any

from comfy_kernel import hookimpl

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
    lib = library(kernel)
    asset_routes.register(routes, lib)
    try:
        from . import seeding, tasks
    except ImportError:  # pragma: no cover - during partial development
        return
    tasks.register(routes, lib)
    seeding.register(routes, lib)


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
