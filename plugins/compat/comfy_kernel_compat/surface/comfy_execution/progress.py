"""``comfy_execution.progress``: the running prompt's progress registry.

Handlers added with :func:`add_progress_handler` are attached to the prompt
running in the caller's context (each prompt has its own registry here).
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.progress import ProgressRegistry, get_progress_state


class ProgressHandler:
    """Base for progress handlers: called with the registry and the node that changed."""

    def __init__(self, name: str):
        self.name = name
        self.enabled = True

    def __call__(self, registry: ProgressRegistry, node_id: str) -> None:
        if self.enabled:
            entry = registry.nodes.get(node_id, {})
            self.update_handler(node_id, entry.get("value", 0), entry.get("max", 1), entry, registry.run.prompt_id)

    def update_handler(self, node_id: str, value: float, max_value: float, state: dict[str, Any],
                       prompt_id: str, image: Any = None) -> None:
        """Override to observe progress."""


def add_progress_handler(handler: ProgressHandler) -> None:
    registry = get_progress_state()
    if registry is not None:
        registry.add_handler(handler.name, handler)


def remove_progress_handler(name: str) -> None:
    registry = get_progress_state()
    if registry is not None:
        registry.remove_handler(name)


__all__ = ["ProgressHandler", "ProgressRegistry", "add_progress_handler", "get_progress_state",
           "remove_progress_handler"]
