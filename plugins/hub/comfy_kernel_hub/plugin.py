"""Entry point of the ``hub`` plugin: opens the store and wires each module's routes."""

from __future__ import annotations

import os
from typing import Any

from comfy_kernel import hookimpl

from . import convert, hub, media, publishing, workflows
from .store import HubStore

# Routes are registered before start-up opens the database, so the objects
# exist from registration on; ``ck_startup`` connects the store.
_hubs: dict[int, hub.Hub] = {}


def hub_for(kernel: Any) -> hub.Hub:
    found = _hubs.get(id(kernel))
    if found is None:
        store = HubStore(kernel.database_path, os.path.join(kernel.dirs.user, "__hub", "published"))
        ttl = int(getattr(kernel.config, "hub_upload_ttl", None) or media.UPLOAD_TTL)
        found = _hubs[id(kernel)] = hub.Hub(store, media.MediaStore(kernel.dirs.user, store, ttl))
    return found


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    parser.add_argument("--hub-upload-ttl", type=int, default=media.UPLOAD_TTL, metavar="SECONDS",
                        help="How long a hub media upload URL stays valid (default: 900 seconds).")


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
