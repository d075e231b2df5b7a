"""The graph executor: validation, scheduling, caching, the durable queue and history.

``attach(kernel)`` (called by the server after ``kernel.load()``) sets
``kernel.executor``; its routes are registered by :mod:`.routes`.
Module map: :mod:`.validation` (spec §4), :mod:`.graph` (DynamicPrompt,
ExecutionList), :mod:`.caching` (signatures and caches), :mod:`.engine`
(the algorithm of §5), :mod:`.store` (SQLite), :mod:`.queue` (queue and
workers), :mod:`.routes` (HTTP).
"""

from __future__ import annotations

from typing import Any

from .queue import Executor


def attach(kernel: Any) -> Any:
    """Set ``kernel.executor``: a plugin's (``ck_make_executor``) or the built-in in-process queue."""
    executor = kernel.host.pm.hook.ck_make_executor(kernel=kernel)
    if executor is None:
        executor = Executor(kernel)
    kernel.executor = executor
    return executor


__all__ = ["attach", "Executor"]
