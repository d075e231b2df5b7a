"""Entry point of the ``hub`` plugin: opens the store and wires each module's routes."""

from __future__ import annotations

from typing import Any

from comfy_kernel import hookimpl

from . import workflows
from .store import HubStore

# Routes are registered before start-up opens the database, so the store
# object exists from registration on; ``ck_startup`` connects it.
_stores: dict[int, HubStore] = {}


def store_for(kernel: Any) -> HubStore:
    store = _stores.get(id(kernel))
    if store is None:
        store = _stores[id(kernel)] = HubStore(kernel.database_path)
    return store


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    store = store_for(kernel)
    workflows.register(routes, store)


@hookimpl
async def ck_startup(kernel: Any) -> None:
    await store_for(kernel).open()


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    store = _stores.pop(id(kernel), None)
    if store is not None:
        await store.close()
