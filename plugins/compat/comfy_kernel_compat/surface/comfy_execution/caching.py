"""``comfy_execution.caching``: names some packs import; comfy-kernel's caches are internal.

The classes exist so imports and ``isinstance`` checks succeed; they hold
nothing, because comfy-kernel's executor keeps its own output cache
(``--cache-lru``/``--cache-none``/``--cache-ram`` select it).
"""

from __future__ import annotations

from typing import Any


class BasicCache:
    def __init__(self, key_class: Any = None):
        self.key_class = key_class

    def get(self, node_id: str) -> Any:
        return None

    def set(self, node_id: str, value: Any) -> None:
        """Ignored: comfy-kernel's executor owns its cache."""


class HierarchicalCache(BasicCache):
    pass


class LRUCache(BasicCache):
    def __init__(self, key_class: Any = None, max_size: int = 100):
        super().__init__(key_class)
        self.max_size = max_size


class NullCache(BasicCache):
    pass


class CacheKeySetID:
    pass


class CacheKeySetInputSignature:
    pass


__all__ = ["BasicCache", "HierarchicalCache", "LRUCache", "NullCache", "CacheKeySetID", "CacheKeySetInputSignature"]
