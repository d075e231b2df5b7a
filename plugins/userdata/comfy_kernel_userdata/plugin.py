"""The ``userdata`` plugin: users, per-user files and settings, and the web app.

Everything the ComfyUI web frontend needs besides the executor and the node
information. Each module holds one group of routes; this module wires them
into the kernel's hooks and keeps the per-kernel state in
``kernel.state["userdata"]``.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel import hookimpl
from comfy_kernel.routing import RouteTable

from . import extensions, files, frontend, i18n, node_replacements, settings, subgraphs, templates, users


def _state(kernel: Any) -> dict[str, Any]:
    state = kernel.state.get("userdata")
    if state is None:
        state = {
            "users": users.Users(kernel.dirs.user, bool(getattr(kernel.config, "multi_user", False))),
            "web_root": frontend.resolve_web_root(kernel.config, kernel.dirs.base),
        }
        kernel.state["userdata"] = state
    return state


@hookimpl
def ck_add_arguments(parser: Any) -> None:
    frontend.add_arguments(parser)


@hookimpl
def ck_register_routes(routes: RouteTable, kernel: Any) -> None:
    state = _state(kernel)
    users.register(routes, state["users"])
    files.register(routes, state["users"])
    settings.register(routes, state["users"])
    frontend.register(routes, state["web_root"])
    templates.register(routes, kernel)
    subgraphs.register(routes, kernel)
    i18n.register(routes, kernel)
    extensions.register(routes, kernel, state["web_root"])
    node_replacements.register(routes, kernel)


@hookimpl
def ck_static_directories(kernel: Any) -> list[tuple[str, str]]:
    return frontend.static_directories(_state(kernel)["web_root"])


@hookimpl
def ck_feature_flags(kernel: Any) -> dict[str, Any]:
    return {"node_replacements": True}


@hookimpl
def ck_system_stats(kernel: Any) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    version = frontend.distribution_version(frontend.FRONTEND_PACKAGE)
    if version:
        stats["required_frontend_version"] = version
    templates_version = templates.templates_version()
    if templates_version:
        stats["installed_templates_version"] = templates_version
    return stats
