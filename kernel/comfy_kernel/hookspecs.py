"""Every hook a comfy-kernel plugin can implement, in one place.

A plugin is any importable object (usually a module) published in the
entry-point group ``comfy_kernel.plugins``. The plugin host registers it with
pluggy; each function below whose name the plugin defines (decorated with
``comfy_kernel.hookimpl``) is called at the moment its docstring names.

Rules that hold for every hook:

* Hooks are called in plugin discovery order (sorted by entry-point name, see
  ``comfy_kernel.plugins``); pluggy calls the last-registered first, so the
  host registers in reverse to keep "earlier plugin, earlier call".
* A hook name that is not listed here makes the plugin fail validation at
  start-up: it is unregistered and reported as failed (``/api/plugins``,
  ``comfy-kernel plugins``) instead of being silently ignored.
* Hooks receive the running :class:`comfy_kernel.kernel.Kernel` where they
  need shared state; plugins must use only its public attributes.

Modules that only export ``NODE_CLASS_MAPPINGS`` (a ComfyUI-style node pack
installed with pip) need no hooks at all: the host registers their nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import HTTPConnection

    from .files.folders import FolderRegistry
    from .identity import Identity
    from .kernel import Kernel
    from .nodes.registry import NodeRegistry
    from .routing import RouteTable
    from .storage import Migrations

PROJECT = "comfy_kernel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- configuration and CLI -------------------------------------------------


@hookspec
def ck_add_arguments(parser: Any) -> None:
    """Add command-line options to ``comfy-kernel serve``.

    Called once, before argument parsing, with the ``argparse`` parser of the
    ``serve`` command. Options a plugin adds here are also read from the
    environment (``COMFY_KERNEL_<OPTION>``) and the config file, like the
    kernel's own. Values end up in ``kernel.config`` under their ``dest``.
    """


@hookspec
def ck_add_commands(subparsers: Any) -> None:
    """Add sub-commands to the ``comfy-kernel`` CLI (for example ``users``).

    Called with the ``argparse`` sub-parser collection. A command sets
    ``func=callable(args) -> int`` through ``set_defaults``.
    """


# --- start-up and shutdown -------------------------------------------------


@hookspec(firstresult=True)
def ck_make_executor(kernel: Kernel) -> Any | None:
    """Return the object to use as ``kernel.executor`` instead of the in-process queue.

    Called once, after ``kernel.load()``. The first plugin that returns an
    object wins; None (every plugin, by default) keeps the built-in
    :class:`comfy_kernel.execution.Executor`. The object must offer what the
    routes use of the built-in one (``start``, ``stop``, ``put``, ``delete``,
    ``queue_for``, ``status``, ``interrupt``, ``store``, ``jobs``, ...); the
    cluster plugin uses it to queue prompts on another machine's workers.
    """


@hookspec
def ck_register_model_folders(folders: FolderRegistry) -> None:
    """Add model folders (``folders.add(name, path, extensions)``).

    Called at start-up after the default folders exist and before
    ``extra_model_paths.yaml`` is applied, so user configuration wins.
    """


@hookspec
def ck_register_nodes(registry: NodeRegistry) -> None:
    """Register node classes (``registry.register(name, cls, display_name)``).

    Called at start-up in plugin order, before legacy ``custom_nodes/``
    packs load. Classic and V3 node classes are both accepted.
    """


@hookspec
def ck_migrations(kernel: Kernel) -> list[Migrations]:
    """The plugin's schema migrations: Alembic revision scripts on a branch of its own.

    Return ``[Migrations("<name>", <folder of revision scripts>, head="<newest revision>")]``;
    each script sets ``branch_labels = ("<name>",)`` on its first revision.
    Before ``ck_startup`` the kernel brings ``kernel.database`` (SQLite or
    PostgreSQL, see ``comfy_kernel.storage``) to every branch's head. Store
    statements written with SQLAlchemy Core then run on either back-end.
    """


@hookspec
def ck_startup(kernel: Kernel) -> None:
    """The server is starting; open databases, start background tasks.

    Called once on the server's event loop after every registration hook and
    before the first request. May be a coroutine function. An exception marks
    the plugin as failed to start; the server keeps running without it.
    """


@hookspec
def ck_warmup(kernel: Kernel) -> None:
    """Import or load, in the background, what the first prompt would otherwise wait for.

    Called once, on a background thread, after the server answers requests
    (so start-up stays fast) and after torch is imported: import the model
    code the nodes import lazily, build tables and tokenizers; with
    ``kernel.config.preload``, load the models the last prompts used. A prompt
    may run meanwhile, so this must be thread-safe. Exceptions are logged and
    ignored. Not called with ``--no-warmup``.
    """


@hookspec
def ck_shutdown(kernel: Kernel) -> None:
    """The server is stopping; flush and close what ``ck_startup`` opened.

    May be a coroutine function. Exceptions are logged and ignored.
    """


# --- HTTP and WebSocket ----------------------------------------------------


@hookspec
def ck_register_routes(routes: RouteTable, kernel: Kernel) -> None:
    """Add HTTP routes with ``@routes.get("/path")`` and friends.

    Called while the app is assembled. Every route is mirrored at ``/api`` +
    path unless registered with ``api_mirror=False`` (``/internal/...``) or
    ``api_only=True``. Handlers are Starlette handlers: ``async def
    handler(request) -> Response``; ``request.state.identity`` holds the
    caller's :class:`~comfy_kernel.identity.Identity`.
    """


@hookspec
def ck_static_directories(kernel: Kernel) -> list[tuple[str, str]]:
    """Return ``[(url_prefix, directory), ...]`` to serve as static files.

    Used for the frontend web root (prefix ``"/"``), templates and docs. Static
    mounts are matched after every API route, longest prefix first.
    """


@hookspec
def ck_web_directories(kernel: Kernel) -> dict[str, str]:
    """Return ``{extension name: directory}`` of frontend extension files.

    Each directory is served at ``/extensions/<name>/`` and its ``.js`` files
    are listed by ``GET /extensions``.
    """


@hookspec
def ck_middleware(kernel: Kernel) -> list[Any]:
    """Return Starlette ``Middleware`` objects to wrap the app.

    They run inside the kernel's own error, CORS/origin and identity layers,
    in plugin order (first plugin outermost).
    """


@hookspec(firstresult=True)
def ck_resolve_identity(request: HTTPConnection, kernel: Kernel) -> Identity | None:
    """Say who is calling: return an Identity, or None to let the next plugin decide.

    Called for every HTTP request and WebSocket connection before routing.
    The first non-None answer wins; when every plugin answers None the
    kernel's default applies (the local user, or the ``Comfy-User`` header in
    ``--multi-user`` mode). To refuse a request, raise
    ``comfy_kernel.http.HTTPError(401, ...)``.
    """


@hookspec(firstresult=True)
def ck_file_access(kernel: Kernel, owner: str, kind: str, path: str) -> bool | None:
    """May ``owner`` (an identity key) open this file of ``output`` or ``temp`` by name?

    Called when a node of ``owner``'s prompt resolves an annotated name
    (``"x.png [output]"``, ``folder_paths.get_annotated_filepath``) while the
    prompt is validated or run; ``path`` is the file's real path. Answer False
    to refuse (the node then sees a missing file), True to allow, None to let
    the next plugin decide; with every answer None the file may be opened.
    Auth plugins answer as their ``/view`` check would.
    """


@hookspec
def ck_ws_handlers(kernel: Kernel) -> dict[str, Any]:
    """Return ``{message type: handler}`` for client-to-server ws messages.

    A handler is ``async def handler(client, data) -> None`` where ``client``
    is the :class:`~comfy_kernel.ws.WsClient` that sent the message.
    """


@hookspec
def ck_feature_flags(kernel: Kernel) -> dict[str, Any]:
    """Return server feature flags to merge into ``/features`` and the ws reply."""


@hookspec
def ck_system_stats(kernel: Kernel) -> dict[str, Any]:
    """Return fields to merge into ``/system_stats`` ``system`` (or ``devices``).

    A returned key ``devices`` (a list) is appended to the device list; every
    other key is merged into the ``system`` object.
    """


# --- execution -------------------------------------------------------------


@hookspec
def ck_on_prompt(body: dict[str, Any], request: HTTPConnection) -> dict[str, Any] | None:
    """Inspect or rewrite a ``POST /prompt`` body before validation.

    Return a replacement body, or None to keep it. An exception is logged and
    that plugin is skipped, as ComfyUI does with its on-prompt handlers.
    """


@hookspec
def ck_admit_prompt(request: HTTPConnection, kernel: Kernel, prompt_id: str, prompt: dict[str, Any],
                    extra_data: dict[str, Any], outputs: list[str], owner: str) -> None:
    """Decide whether a validated ``POST /prompt`` may enter the queue (quotas, credits).

    Called after validation, before the prompt is queued, with the caller's
    identity in ``request.state.identity`` and the queue ``owner`` key. To
    refuse, raise ``comfy_kernel.http.HTTPError`` with the status and body to
    answer; ComfyUI's shape is ``{"error": {"type", "message", "details",
    "extra_info"}, "node_errors": {}}``. The hook may add keys to
    ``extra_data``: they are stored with the queue item (and survive a
    restart). May be a coroutine function. Any other exception refuses the
    prompt with a 503 (an admission check that cannot decide does not let a
    prompt through). With no implementation the kernel skips the call.
    """


@hookspec
def ck_prompt_may_start(event: dict[str, Any], kernel: Kernel) -> bool | None:
    """Whether a queued prompt may start now (per-owner concurrency limits).

    Asked by an idle worker for each queued prompt in queue order;
    ``event`` has ``prompt_id``, ``owner`` and ``extra_data``. Return False
    to keep that prompt waiting: the worker takes the next allowed one, and
    asks again whenever a prompt finishes or ``kernel.executor.wake()`` is
    awaited. Any other answer allows it. Called on the server loop; must be
    fast and must not block. With no implementation the queue pops in order
    without asking.
    """


@hookspec
def ck_payment_providers(kernel: Kernel) -> dict[str, Any]:
    """Return ``{name: provider}`` payment providers for the billing plugin.

    A provider implements ``comfy_kernel_billing.providers.PaymentProvider``
    (top-ups, subscriptions, payment portal); the billing plugin uses the one
    named by ``--billing-provider``. Providers redirect people to the payment
    service; card data never passes through the server.
    """


@hookspec
def ck_prompt_queued(event: dict[str, Any]) -> None:
    """A prompt entered the queue.

    ``event`` has ``prompt_id``, ``number``, ``owner`` (identity key),
    ``client_id`` and ``outputs``. Observers only; the return value is ignored.
    """


@hookspec
def ck_node_executed(event: dict[str, Any]) -> None:
    """A node finished with a UI result (the ``executed`` message).

    ``event`` has ``prompt_id``, ``node``, ``display_node``, ``output`` and
    ``owner``. Observers only.
    """


@hookspec
def ck_prompt_finished(event: dict[str, Any]) -> None:
    """A prompt finished (success, error or interrupt) and its history exists.

    ``event`` has ``prompt_id``, ``owner``, ``status`` (the history status
    object) and ``outputs``, and for metering: ``prompt`` and ``extra_data`` (as queued),
    ``created``, ``started`` and ``ended`` (epoch seconds), ``worker`` (``id``,
    ``type``, ``name``, ``index`` and ``device`` of the worker that ran it) and
    ``nodes``: ``{node_id: {"class_type", "wall_s", "busy_s", "cached"}}`` for
    every node the run visited (executed, or answered from the cache; the
    inputs of a cached node are not visited). ``wall_s`` is host
    time spent executing the node; ``busy_s`` is the time the node held the
    worker's device (on CUDA measured on the device's stream, so kernels a
    node queued count for that node; elsewhere equal to ``wall_s``).
    Observers only.
    """
