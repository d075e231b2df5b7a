"""Entry point of the ``hub`` plugin: declares its migrations, wires each module's routes, seeds its labels."""

from __future__ import annotations

import os
from typing import Any

from comfy_kernel import hookimpl
from comfy_kernel.storage import Migrations

from . import convert, hub, media, publishing, workflows
from .store import HubStore

# Routes are registered before start-up opens the database, so the objects
# exist from registration on; by ``ck_startup`` the kernel has opened
# ``kernel.database`` and brought the hub's tables to their newest revision.
_hubs: dict[int, hub.Hub] = {}


def hub_for(kernel: Any) -> hub.Hub:
    found = _hubs.get(id(kernel))
    if found is None:
        store = HubStore(kernel.database, os.path.join(kernel.dirs.user, "__hub", "published"))
        ttl = int(getattr(kernel.config, "hub_upload_ttl", None) or media.UPLOAD_TTL)
        found = _hubs[id(kernel)] = hub.Hub(store, media.MediaStore(kernel.dirs.user, store, ttl))
    return found


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    parser.add_argument("--hub-upload-ttl", type=int, default=media.UPLOAD_TTL, metavar="SECONDS",
                        help="How long a hub media upload URL stays valid (default: 900 seconds).")


@hookimpl
def ck_migrations(kernel: Any) -> list[Migrations]:
    """The hub's tables (created and upgraded by the kernel before start-up)."""
    from .migrations import HUB

    return [HUB]


@hookimpl
def ck_register_routes(routes: Any, kernel: Any) -> None:
    the_hub = hub_for(kernel)
    # Fixed paths first: Starlette takes the first route that matches, and
    # /workflows/{workflow_id} or /hub/profiles/{username} would match them.
    publishing.register(routes, the_hub.store)
    convert.register(routes, the_hub.store, kernel)
    workflows.register(routes, the_hub.store)
    media.register(routes, the_hub.media)
    hub.register(routes, the_hub)


@hookimpl
async def ck_startup(kernel: Any) -> None:
    the_hub = hub_for(kernel)
    await the_hub.store.open()
    await the_hub.seed_labels()


@hookimpl
async def ck_shutdown(kernel: Any) -> None:
    the_hub = _hubs.pop(id(kernel), None)
    if the_hub is not None:
        await the_hub.store.close()
