"""The compat hooks that run per prompt, registered only once a pack imports ``server``.

They keep ``PromptServer.instance`` in step with the executor (the on-prompt
handlers, the last client and node it reported). A server whose packs never
import ``server`` has no instance to keep in step, so these hooks are handed
to the kernel (``PluginHost.add_hooks``) when the module is first imported, or
at start-up if it was imported before the kernel existed; until then a prompt
does not pay for them.
"""

from __future__ import annotations

import sys
from typing import Any

from comfy_kernel import hookimpl

OWNER = "compat"


def _instance() -> Any:
    module = sys.modules.get("server")
    server = getattr(module, "PromptServer", None) if module is not None else None
    return getattr(server, "instance", None)


def register(kernel: Any) -> None:
    """Hand these hooks to ``kernel``'s plugin host (once per host)."""
    if kernel is not None and _instance() is not None:
        kernel.host.add_hooks(OWNER, sys.modules[__name__])


@hookimpl
def ck_on_prompt(body: dict[str, Any], request: Any) -> dict[str, Any] | None:
    instance = _instance()
    if instance is None or not instance.on_prompt_handlers:
        return None
    return instance.trigger_on_prompt(body)


@hookimpl
def ck_prompt_queued(event: dict[str, Any]) -> None:
    """Outside a node, ``PromptServer.instance.client_id`` reads as the last client that queued a prompt."""
    instance = _instance()
    if instance is not None and event.get("client_id"):
        instance.client_id = event["client_id"]


@hookimpl
def ck_node_executed(event: dict[str, Any]) -> None:
    """Outside a node, ``last_node_id``/``last_prompt_id`` read as the last node that reported a result."""
    instance = _instance()
    if instance is not None:
        instance.last_node_id = event.get("display_node") or event.get("node")
        instance.last_prompt_id = event.get("prompt_id")
