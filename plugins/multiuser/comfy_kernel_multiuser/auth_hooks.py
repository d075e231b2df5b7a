"""The multiuser hooks that run per request and per prompt, registered only with ``--auth``.

Without ``--auth`` they would all answer "nothing to do"; the plugin hands
them to the kernel (``PluginHost.add_hooks``) only when authentication is on,
so a server without it does not call them at all.
"""

from __future__ import annotations

import logging
from typing import Any

from comfy_kernel import hookimpl

from . import enforcement, outputs

log = logging.getLogger(__name__)

#: The started servers' states: observer hooks get no kernel argument.
STATES: list[Any] = []


@hookimpl
def ck_resolve_identity(request: Any, kernel: Any) -> Any:
    mu = kernel.state.get("multiuser")
    if mu is None or not mu.enabled:
        return None
    return enforcement.resolve(mu, request)


@hookimpl
def ck_file_access(kernel: Any, owner: str, kind: str, path: str) -> bool | None:
    """A node opens files by name as its prompt's owner, under the rule ``/view`` applies."""
    mu = kernel.state.get("multiuser")
    if mu is None or not mu.enabled:
        return None
    if not mu.started:
        return False
    return outputs.node_may_open(mu, owner, path)


@hookimpl
def ck_node_executed(event: dict[str, Any]) -> None:
    _record_outputs(event, "output")


@hookimpl
def ck_prompt_finished(event: dict[str, Any]) -> None:
    _record_outputs(event, "outputs")


def _record_outputs(event: dict[str, Any], field: str) -> None:
    """Remember which owner each reported output file belongs to (see outputs.py)."""
    for mu in STATES:
        if not (mu.enabled and mu.started):
            continue
        try:
            if mu.ownership is not None:
                mu.ownership.record(event.get("owner"), event.get(field))
        except Exception:
            # Never raise from a hook the kernel calls with call_each: it would drop the plugin.
            log.exception("multiuser: could not record output ownership")


@hookimpl
def ck_on_prompt(body: dict[str, Any], request: Any) -> dict[str, Any] | None:
    kernel = request.app.state.kernel if hasattr(request, "app") else None
    mu = kernel.state.get("multiuser") if kernel is not None else None
    if mu is None or not mu.enabled:
        return None
    from .prompts import on_prompt

    try:
        return on_prompt(mu, body, request)
    except Exception:
        # An exception here would make the kernel unregister the plugin, and
        # with it authentication: log it and leave the body as it came.
        log.exception("multiuser: prompt hook failed")
        return None
