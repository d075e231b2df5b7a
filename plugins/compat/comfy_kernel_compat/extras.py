"""Shared lookup for ``comfy_extras.*`` modules: node classes by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import finder  # noqa: F401 - the ComfyUI names must resolve before ``nodes`` is imported


def node_class_getattr(module_name: str) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` returning the registered node class of that name."""

    def __getattr__(name: str) -> Any:
        import nodes

        try:
            return getattr(nodes, name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r} "
                                 f"(no node of that name is registered)") from None

    return __getattr__
